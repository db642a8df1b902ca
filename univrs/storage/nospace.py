"""Saying "the disk is full" when a durable write fails for lack of space.

A write that cannot be made durable stops the node (continuing after a failed fsync is unsafe),
and nothing it was writing had been acknowledged (nothing is acknowledged before its fsync).
What the operator needs is *why*: ``write_failure`` turns the error of a failed write into a
``StorageError`` whose message says which file, "no space left on device", the free bytes of
that filesystem (``os.statvfs``) and what to do. A ``DiskFull`` for that case, so the node's
exit path can log it as one ERROR line with the figures (univrs/cli/node.py).

ENOSPC (and EDQUOT) say it outright. LMDB often reports a full disk as EIO ("Input/output
error") from a failed write or fsync of its file: an EIO with less than ``LOW_FREE_BYTES``
free on that filesystem is reported as *probably* no space left. LMDB's own "map full" (the
memory map at its maximum size, univrs/storage/env.py) is another thing and keeps its own
message.
"""

from __future__ import annotations

import errno
import os
import pathlib

from univrs.errors import StorageError

__all__ = ["LOW_FREE_BYTES", "DiskFull", "disk_full", "free_bytes", "write_failure"]

# An EIO on a filesystem with less free than this is taken for a full disk ("probably").
LOW_FREE_BYTES = 8 << 20

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_ADVICE = (
    "free space or grow the volume, then start the node again; nothing acknowledged was lost"
    " (nothing is acknowledged before its fsync)"
)


class DiskFull(StorageError):
    """A durable write failed because (probably, for an EIO) its filesystem is full."""

    def __init__(self, message: str, *, path: pathlib.Path, free: int | None, probably: bool):
        super().__init__(message)
        self.path = path
        self.free = free
        self.probably = probably


def free_bytes(path: pathlib.Path) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of ``path`` (its nearest
    existing ancestor); None if statvfs fails."""
    for candidate in (path, *path.parents):
        try:
            st = os.statvfs(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        return st.f_bavail * st.f_frsize
    return None


def _errno_of(exc: BaseException) -> int | None:
    """The errno of an OSError, or the one named in an LMDB error's message (py-lmdb keeps
    only ``mdb_strerror``'s text, e.g. ``mdb_txn_commit: Input/output error``)."""
    if isinstance(exc, OSError):
        return exc.errno
    text = str(exc)
    for code in (*_FULL_ERRNOS, errno.EIO):
        if text.endswith(os.strerror(code)):
            return code
    return None


def disk_full(path: pathlib.Path, exc: BaseException) -> DiskFull | None:
    """The ``DiskFull`` to raise for the failed durable write of ``path`` that raised ``exc``
    when its filesystem is (probably) full; None when it is some other failure."""
    code = _errno_of(exc)
    if code in _FULL_ERRNOS:
        probably = False
    elif code == errno.EIO:
        probably = True
    else:
        return None
    free = free_bytes(path)
    if probably and (free is None or free >= LOW_FREE_BYTES):
        return None  # an I/O error on a disk with room: a failing disk, not a full one
    room = "free bytes unknown" if free is None else f"{free} bytes free on that filesystem"
    if probably:
        what = f"probably no space left on device ({os.strerror(errno.EIO)}, {room})"
    else:
        what = f"no space left on device ({room})"
    return DiskFull(
        f"cannot write {path}: {what}: {_ADVICE}", path=path, free=free, probably=probably
    )


def write_failure(path: pathlib.Path, exc: BaseException, fallback: str) -> StorageError:
    """The error to raise for a failed durable write of ``path``: a ``DiskFull`` when the
    filesystem is (probably) full, else ``StorageError(fallback)``."""
    full = disk_full(path, exc)
    return StorageError(fallback) if full is None else full
