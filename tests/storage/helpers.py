"""Helpers shared by the storage tests."""

from __future__ import annotations

import pathlib

from univrs.raft.messages import Entry, EntryKind


def make_entries(first: int, last: int, *, term: int = 1, size: int = 12) -> list[Entry]:
    """Entries first..last whose data names their index (so corruption can be aimed)."""
    return [
        Entry(term=term, index=i, kind=EntryKind.NORMAL, data=marker(i).ljust(size, b"."))
        for i in range(first, last + 1)
    ]


def marker(index: int) -> bytes:
    return f"<{index:08d}>".encode()


def flip_everywhere(path: pathlib.Path, needle: bytes, offset: int = 1) -> int:
    """Flip one bit of byte ``offset`` in every copy of ``needle`` in the file; returns copies.

    Every copy, because LMDB's copy-on-write may leave stale copies of a page behind.
    """
    raw = bytearray(path.read_bytes())
    count = 0
    start = raw.find(needle)
    while start != -1 and count < 1000:
        raw[start + offset] ^= 0x01
        count += 1
        start = raw.find(needle, start + 1)
    path.write_bytes(bytes(raw))
    return count
