"""LMDB's meta pages, read without mapping the file: is ``data.mdb`` as long as it must be?

LMDB maps ``data.mdb`` into memory and reads its pages directly. A file cut short (a copy
interrupted, a full disk during a restore, a careless ``truncate``) still opens, and the first
access to a page past its end kills the process with SIGBUS, with no message at all. So before
opening it, read the two meta pages with plain ``pread`` calls and check that the file holds
every page the newest committed transaction uses.

The layout (LMDB 0.9, ``MDB_meta`` after a 16-byte page header, native byte order): the magic
``0xBEEFC0DE`` and the format version (uint32 each), the map address and size, two ``MDB_db``
records of 48 bytes (the first one's leading uint32 is the page size), then ``mm_last_pg``
(the last page in use) and ``mm_txnid``. Page 0 and page 1 are the two meta pages; LMDB uses
the one with the higher transaction id. Only 64-bit builds have this layout; elsewhere the
check is skipped.
"""

from __future__ import annotations

import os
import pathlib
import struct

import attrs

MAGIC = 0xBEEFC0DE
_PAGE_HEADER = 16
_HEAD = struct.Struct("=II")  # mm_magic, mm_version
_PSIZE_OFFSET = _PAGE_HEADER + 24  # mm_dbs[FREE_DBI].md_pad holds the page size
_TAIL = struct.Struct("=QQ")  # mm_last_pg, mm_txnid
_TAIL_OFFSET = _PAGE_HEADER + 120
_META_BYTES = _TAIL_OFFSET + _TAIL.size
SUPPORTED = struct.calcsize("P") == 8


class BadHeader(Exception):
    """The file is not a whole LMDB data file; the text says why, after the file's name
    ("<file> is truncated to ...")."""


@attrs.frozen(kw_only=True)
class Header:
    """What the newest meta page of a data file says."""

    page_size: int
    last_page: int  # the last page the newest committed transaction uses
    txnid: int
    file_bytes: int

    @property
    def needed_bytes(self) -> int:
        """The least the file must hold: every page up to ``last_page``."""
        return (self.last_page + 1) * self.page_size


def _meta(fd: int, offset: int) -> tuple[int, int, int, int] | None:
    """(magic, page size, last page, txnid) of the meta page at ``offset``; None if short."""
    raw = os.pread(fd, _META_BYTES, offset)
    if len(raw) < _META_BYTES:
        return None
    magic, _version = _HEAD.unpack_from(raw, _PAGE_HEADER)
    (psize,) = struct.unpack_from("=I", raw, _PSIZE_OFFSET)
    last_page, txnid = _TAIL.unpack_from(raw, _TAIL_OFFSET)
    return magic, psize, last_page, txnid


def read_header(path: pathlib.Path) -> Header:
    """The newest meta page of the LMDB data file ``path``.

    Raises ``BadHeader`` if the file is too short to hold its meta pages, is not an LMDB data
    file, or is shorter than the pages its newest transaction uses (``check_length``), and
    ``OSError`` if it cannot be read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        first = _meta(fd, 0)
        if first is None:
            raise BadHeader(f"is too short ({size} bytes) to hold LMDB's meta pages")
        magic, psize, last_page, txnid = first
        if magic != MAGIC:
            raise BadHeader("is not an LMDB data file (no LMDB magic number in its first page)")
        if psize < _META_BYTES or psize & (psize - 1):
            raise BadHeader(f"has an implausible page size {psize} in its first meta page")
        second = _meta(fd, psize)
        if second is None or size < 2 * psize:
            raise BadHeader(
                f"is truncated to {size} bytes: its two meta pages need {2 * psize} bytes"
            )
        if second[0] == MAGIC and second[3] > txnid:
            _, _, last_page, txnid = second
    finally:
        os.close(fd)
    return Header(page_size=psize, last_page=last_page, txnid=txnid, file_bytes=size)


def check_length(path: pathlib.Path) -> Header:
    """``read_header``, and refuse a file shorter than the pages its newest transaction uses
    (mapping it would kill the process with SIGBUS on the first access past the end)."""
    header = read_header(path)
    if header.file_bytes < header.needed_bytes:
        raise BadHeader(
            f"is truncated to {header.file_bytes} bytes: its last committed transaction "
            f"({header.txnid}) uses {header.last_page + 1} pages of {header.page_size} bytes "
            f"({header.needed_bytes} bytes)"
        )
    return header
