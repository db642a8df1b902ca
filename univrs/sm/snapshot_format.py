"""The snapshot format's names and the GC pause shared by its writer and its reader.

The format itself (header keys, rows, versions) is described in ``univrs/sm/snapshot.py``.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
from collections.abc import Callable, Iterator

from univrs.sm.sessions import SessionPolicy

SNAPSHOT_FORMAT = "univrs-sm-snapshot"
SNAPSHOT_FORMAT_VERSION = 1

TOP_KEYS = (
    "format",
    "version",
    "last_index",
    "last_term",
    "clock_ms",
    "policy",
    "workloads",
    "instances",
    "nodes",
    "balances",
    "sessions",
)
OPTIONAL_KEYS = ("session_owners", "tokens", "tokens_bootstrapped", "last_revision")
DEFAULT_PER_OWNER = SessionPolicy().max_sessions_per_owner


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building or reading 10^5 containers: none of them form
    cycles, and CPython would otherwise rescan the whole heap many times (5x slower)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class CheckStopped(BaseException):
    """A snapshot's check was stopped: its result would never be used (the follower moved
    past the snapshot while it was checked: univrs/runtime/checking.py). A ``BaseException``,
    like trio's ``Cancelled``: a reader's ``except Exception`` (which takes a failure for data
    in another form and tries the full path) must not take it."""


# What the snapshot check running in this thread polls to know it should stop (None: it runs
# to the end). Set by ``SnapshotChecker.precheck`` in its worker thread, for its call only;
# polled by the staging's row loops (univrs/storage/sm_ingest.py) every ``STOP_EVERY`` rows.
check_stop: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar(
    "check_stop", default=None
)
STOP_EVERY = 4096  # rows between two polls: about 20 ms of staging at 1M
