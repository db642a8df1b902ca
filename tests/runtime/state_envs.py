"""Set-up shared by the tests of the state env's layout (test_state_journal.py,
test_state_counts.py, tests/storage/test_stored_rows.py): a log position that moves on per
command, and an env rewritten as the code before state format 3 left it."""

from __future__ import annotations

from typing import Any

import cbor2
import lmdb

from univrs.sm import ClusterStateMachine
from univrs.sm.responses import Response
from univrs.sm.snapshot import _session_row
from univrs.storage.sm_tables import StateEnv


class Clock:
    """The log position and the stamped time of the next command (``apply_next``)."""

    def __init__(self) -> None:
        self.index = 0
        self.time_ms = 1_000


def apply_next(sm: ClusterStateMachine, clock: Clock, cmd: Any, dt: int = 10) -> Response:
    """Apply ``cmd`` as the next entry, ``dt`` ms after the one before."""
    clock.index += 1
    clock.time_ms += dt
    return sm.apply(cmd, index=clock.index, term=1, time_ms=clock.time_ms)


def old_layout(path: str, fmt: int) -> None:
    """Make the env at ``path`` what the code before wrote: format ``fmt``, each session one
    row ``[owner, *snapshot session row]``, no ``session_responses`` (and for format 1 no
    ``workload_counts``)."""
    env = StateEnv(path)
    sm = env.load()
    sessions = list(sm.stored_sessions())
    env.close()
    raw = lmdb.open(path, max_dbs=16)
    with raw.begin(write=True) as txn:
        txn.drop(raw.open_db(b"session_responses", txn=txn), delete=True)
        if fmt == 1:
            txn.drop(raw.open_db(b"workload_counts", txn=txn), delete=True)
        sessions_db = raw.open_db(b"sessions", txn=txn)
        for s in sessions:
            txn.put(s.client_id.encode(), cbor2.dumps([s.owner, *_session_row(s)]), db=sessions_db)
        meta_db = raw.open_db(b"meta", txn=txn)
        meta = cbor2.loads(bytes(txn.get(b"state", db=meta_db) or b""))
        meta[0] = fmt
        txn.put(b"state", cbor2.dumps(meta), db=meta_db)
    raw.close()
