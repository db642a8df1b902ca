"""The CLI's cached idempotency session: one session per user and cluster, reused by every
write command, so a write costs one log entry instead of three (open, write, close).

The session (its client id and the next sequence number) lives in
``$UNIVRS_SESSION_DIR/session-<cluster fingerprint>.json`` (default ``$XDG_CACHE_HOME/univrs`` or
``~/.cache/univrs``; an empty ``UNIVRS_SESSION_DIR`` turns the cache off). The directory is
mode 0700 and the files 0600: a session id lets its holder's retries be answered from the
cache, so it is private to the user.

Rules that keep exactly-once exact:

- one command at a time per session: an exclusive ``flock`` on ``session-<id>.lock`` is held
  for the whole command; a second command that finds it taken uses a session of its own (the
  old behaviour) rather than wait;
- a sequence number is never used twice: before the command sends anything, the file is
  rewritten (fsynced, renamed) with ``next_seq`` moved ``RESERVE`` ahead; at the end it gets
  the session the client really holds (a session that expired on the server is replaced by the
  client, and the new one is stored). Numbers skipped by a crash are harmless (the state
  machine keeps a window, not a sequence).
- the cluster id in the file name keeps one cluster's session id away from another cluster
  (client ids are log indexes, so the same id may exist in both).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import attrs

RESERVE = 4  # sequence numbers one command may use (a write, a retry after a prefix lookup)
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def cache_dir() -> pathlib.Path | None:
    """Where sessions are cached (None: caching is off)."""
    configured = os.environ.get("UNIVRS_SESSION_DIR")
    if configured is not None:
        return pathlib.Path(configured) if configured else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "univrs"


def cluster_id_of(api: str, timeout: float = 2.0) -> str | None:
    """What names the cluster at ``api`` for the cache (None if no endpoint answers): the
    fingerprint of its id that ``/v1/node/status`` shows (the id itself is not public), from
    the first endpoint that answers, over TLS where the CLI uses it."""
    from univrs.cli.common import api_url

    for addr in api.split(","):
        try:
            base, context = api_url(addr)
            with urllib.request.urlopen(
                f"{base}/v1/node/status", timeout=timeout, context=context
            ) as r:
                doc = json.load(r)
            value = doc.get("cluster") or doc.get("cluster_id")
        except (urllib.error.URLError, OSError, ValueError, AttributeError):
            continue
        return value if isinstance(value, str) and _SAFE.match(value) else None
    return None


@attrs.define(eq=False)
class SessionCache:
    """One cluster's cached session, locked for the lifetime of this object."""

    path: pathlib.Path
    _lock_fd: int

    @classmethod
    def open(cls, folder: pathlib.Path, cluster_id: str) -> SessionCache | None:
        """Lock the cluster's session (None when another command holds it)."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        fd = os.open(folder / f"session-{cluster_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(folder / f"session-{cluster_id}.json", fd)

    def load(self) -> tuple[str, int] | None:
        """(client id, next sequence number) of the cached session, if any (a damaged file
        counts as none)."""
        try:
            doc = json.loads(self.path.read_text())
            client_id, next_seq = doc["client_id"], doc["next_seq"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(client_id, str) or type(next_seq) is not int or next_seq < 1:
            return None
        return client_id, next_seq

    def save(self, client_id: str, next_seq: int) -> None:
        """Store the session durably (write, fsync, rename) with mode 0600."""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({"client_id": client_id, "next_seq": next_seq}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        os.close(self._lock_fd)  # releases the lock


@contextlib.contextmanager
def cached_session(api: str) -> Iterator[SessionCache | None]:
    """The locked session cache of the cluster at ``api`` (None: off, unknown or busy)."""
    folder = cache_dir()
    cluster_id = cluster_id_of(api) if folder is not None else None
    cache = None
    if folder is not None and cluster_id is not None:
        try:
            cache = SessionCache.open(folder, cluster_id)
        except OSError:
            cache = None  # an unwritable cache is no reason to fail the command
    try:
        yield cache
    finally:
        if cache is not None:
            cache.close()
