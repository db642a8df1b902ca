"""An exclusive, non-blocking lock on a data directory (``flock`` on its ``LOCK`` file).

``flock`` locks belong to an open file description, so a second open of the same file is
refused even inside the same process, and the kernel drops the lock when the holder dies
(kill -9 included): there is never a stale lock to clean up. The holder's pid is written into
the file only so that the refusal can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib

import attrs

from univrs.errors import StorageError

LOCK_FILE = "LOCK"


@attrs.define(eq=False)
class DirLock:
    """A held lock on a data directory; ``release()`` is idempotent."""

    path: pathlib.Path
    _fd: int | None

    @classmethod
    def acquire(cls, data_dir: pathlib.Path) -> DirLock:
        path = data_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = "this process" if holder == os.getpid() else f"pid {holder or 'unknown'}"
            raise StorageError(
                f"data dir {data_dir} is locked by another univrs process ({who})"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock {path}: {exc.strerror}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)  # closing the descriptor drops the lock
            raise StorageError(f"cannot write lock file {path}: {exc.strerror}") from None
        return cls(path=path, fd=fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the last descriptor releases the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
