"""LMDB's B-trees, walked without mapping the file: can LMDB read ``data.mdb`` without dying?

LMDB trusts its pages. A page of garbage in ``data.mdb`` (a bad sector, a careless ``dd``, a
copy spliced from two files) where a tree expects a leaf fails one of its assertions
(``mdb_cursor_next: Assertion 'IS_LEAF(mp)' failed``) and aborts the whole process with
SIGABRT, with no word about which file; a branch pointing past the end of the file faults.
The node would die at every start (s16-fuzz: 3 of 150 random damages of a log store).

So before the file is mapped, ``check_trees`` reads the pages of every tree the newest meta
page reaches (the free-page tree, the main tree and each named database in it) with plain
``pread`` calls, and checks what LMDB's readers rely on: every page number lies within the
pages the newest transaction uses and names itself, no page is reached twice, a page above a
tree's recorded depth is a branch and one at it a leaf, node offsets and sizes stay within
their page, and every overflow page a leaf points to is an overflow page that fits. It does
not check keys, their order or the values (the log's checksums do that). It costs one read
of every page in use at each open: about what the start's own scan of the log reads anyway.

The layout is LMDB 0.9's on 64-bit builds (see ``header``): a 16-byte page header
(``mp_pgno`` u64, ``mp_pad`` u16, ``mp_flags`` u16, ``mp_lower``/``mp_upper`` u16 or
``mp_pages`` u32), then u16 node offsets; a node is ``mn_lo``/``mn_hi``/``mn_flags``/
``mn_ksize`` (u16 each) and its key, then (in a leaf) its data; a branch node's child page is
``mn_lo | mn_hi << 16 | mn_flags << 32``. A database record (``MDB_db``, 48 bytes) holds
``md_flags``/``md_depth`` at 4 and ``md_root`` at 40.
"""

from __future__ import annotations

import os
import pathlib
import struct

from univrs.storage.header import BadHeader, Header

_PAGE_HEAD = struct.Struct("=QHHHH")  # pgno, pad, flags, lower, upper
_NODE_HEAD = struct.Struct("=HHHH")  # lo, hi, flags, ksize
_DB = struct.Struct("=IHHQQQQQ")  # pad, flags, depth, branch, leaf, overflow, entries, root
_DBS_OFFSET = 16 + 24  # the FREE_DBI and MAIN_DBI records in a meta page
_TXNID_OFFSET = 16 + 128
P_BRANCH, P_LEAF, P_OVERFLOW, P_LEAF2 = 0x01, 0x02, 0x04, 0x20
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
P_INVALID = 2**64 - 1
MAX_DEPTH = 64


class _Walk:
    """One walk over the file's pages; ``seen`` is a bitmap of the pages reached so far."""

    def __init__(self, fd: int, header: Header) -> None:
        self.fd = fd
        self.psize = header.page_size
        self.last = header.last_page
        self.seen = bytearray(header.last_page // 8 + 1)

    def page(self, pgno: int, what: str) -> bytes:
        if not 2 <= pgno <= self.last:
            raise BadHeader(
                f"is damaged: {what} points to page {pgno}, outside pages 2-{self.last}"
            )
        byte, bit = divmod(pgno, 8)
        if self.seen[byte] & (1 << bit):
            raise BadHeader(f"is damaged: page {pgno} is reached twice ({what})")
        self.seen[byte] |= 1 << bit
        raw = os.pread(self.fd, self.psize, pgno * self.psize)
        if len(raw) < self.psize:
            raise BadHeader(f"is damaged: page {pgno} cannot be read whole")
        if _PAGE_HEAD.unpack_from(raw)[0] != pgno:
            raise BadHeader(f"is damaged: page {pgno} does not name itself ({what})")
        return raw

    def tree(self, record: bytes, name: str) -> None:
        """Walk the tree of the ``MDB_db`` record ``record`` (database ``name``)."""
        _, _, depth, _, _, _, _, root = _DB.unpack(record)
        if root == P_INVALID:
            return  # an empty database
        if not 1 <= depth <= MAX_DEPTH:
            raise BadHeader(f"is damaged: database {name} records a depth of {depth}")
        level = [root]
        for d in range(1, depth + 1):
            leaf = d == depth
            below = []
            for pgno in level:
                raw = self.page(pgno, f"database {name}")
                below += self._nodes(raw, pgno, leaf, name)
            level = below

    def _nodes(self, raw: bytes, pgno: int, leaf: bool, name: str) -> list[int]:
        """Check the page ``raw``; the child pages of a branch (a leaf's are walked here)."""
        _, _, flags, lower, upper = _PAGE_HEAD.unpack_from(raw)
        want = P_LEAF if leaf else P_BRANCH
        where = f"page {pgno} of database {name}"
        if flags & (P_BRANCH | P_LEAF | P_OVERFLOW | P_LEAF2) != want:
            kind = "leaf" if leaf else "branch"
            raise BadHeader(f"is damaged: {where} is not a {kind} page (flags {flags:#x})")
        if lower < 16 or lower & 1 or upper > self.psize or lower > upper:
            raise BadHeader(f"is damaged: {where} has a bad layout ({lower}, {upper})")
        count = (lower - 16) >> 1
        if count == 0 and not leaf:
            raise BadHeader(f"is damaged: {where} is an empty branch")
        children = []
        for ptr in struct.unpack_from(f"={count}H", raw, 16):
            if ptr < upper or ptr + 8 > self.psize:
                raise BadHeader(f"is damaged: {where} has a node outside it")
            lo, hi, nflags, ksize = _NODE_HEAD.unpack_from(raw, ptr)
            if ptr + 8 + ksize > self.psize:
                raise BadHeader(f"is damaged: {where} has a key outside it")
            if not leaf:
                children.append(lo | hi << 16 | nflags << 32)
                continue
            size = lo | hi << 16
            data = ptr + 8 + ksize
            if nflags & F_BIGDATA:
                if data + 8 > self.psize:
                    raise BadHeader(f"is damaged: {where} has a value outside it")
                (first,) = struct.unpack_from("=Q", raw, data)
                self._overflow(first, size, where)
            elif data + size > self.psize:
                raise BadHeader(f"is damaged: {where} has a value outside it")
            elif nflags & F_SUBDATA and not nflags & F_DUPDATA:
                if size != _DB.size:
                    raise BadHeader(f"is damaged: {where} has a bad database record")
                sub = raw[ptr + 8 : data].decode("utf-8", "replace")
                self.tree(raw[data : data + size], sub)
        return children

    def _overflow(self, first: int, size: int, where: str) -> None:
        raw = self.page(first, where)
        flags = _PAGE_HEAD.unpack_from(raw)[2]
        (pages,) = struct.unpack_from("=I", raw, 12)
        if not flags & P_OVERFLOW or pages < 1 or first + pages - 1 > self.last:
            raise BadHeader(f"is damaged: {where} points to a bad overflow page {first}")
        if pages * self.psize < size + 16:
            raise BadHeader(f"is damaged: overflow page {first} is shorter than its value")
        for extra in range(first + 1, first + pages):  # each is used once
            byte, bit = divmod(extra, 8)
            if self.seen[byte] & (1 << bit):
                raise BadHeader(f"is damaged: page {extra} is reached twice ({where})")
            self.seen[byte] |= 1 << bit


def check_trees(path: pathlib.Path, header: Header) -> None:
    """Raise ``BadHeader`` if a tree of the LMDB data file ``path`` (whose newest meta page is
    ``header``, from ``header.check_length``) would make LMDB fail an assertion or fault;
    ``OSError`` if it cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        meta = b""
        for offset in (0, header.page_size):
            raw = os.pread(fd, _TXNID_OFFSET + 8, offset)
            if struct.unpack_from("=Q", raw, _TXNID_OFFSET)[0] == header.txnid:
                meta = raw
                break
        if not meta:
            raise BadHeader("is damaged: no meta page holds its newest transaction")
        walk = _Walk(fd, header)
        walk.tree(meta[_DBS_OFFSET : _DBS_OFFSET + _DB.size], "(free pages)")
        walk.tree(meta[_DBS_OFFSET + _DB.size : _DBS_OFFSET + 2 * _DB.size], "(main)")
    finally:
        os.close(fd)
