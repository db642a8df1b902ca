"""The snapshot format's names and the GC pause shared by its writer and its reader.

The format itself (header keys, rows, versions) is described in ``univrs/sm/snapshot.py``.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

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
