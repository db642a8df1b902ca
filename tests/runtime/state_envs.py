"""Set-up shared by the tests of the state env's layout (test_state_journal.py,
test_state_counts.py, tests/storage/test_stored_rows.py): a log position that moves on per
command, and an env rewritten as the code before state format 4 left it."""

from __future__ import annotations

from typing import Any

import cbor2
import lmdb

from univrs.sm import ClusterStateMachine
from univrs.sm.plain import response_to_plain
from univrs.sm.responses import Response
from univrs.sm.snapshot import _session_row
from univrs.storage.sm_tables import DEFAULT_MAP_SIZE, StateEnv


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
    """Make the env at ``path`` what the code before wrote: format ``fmt``; the activity index
    ``session_activity`` (``last_index + client id``, empty values); for format 3 each session
    a head row and one ``session_responses`` row per response keyed by its seq; for formats 1
    and 2 each session one row ``[owner, *snapshot session row]`` and no ``session_responses``
    (and for format 1 no ``workload_counts``)."""
    env = StateEnv(path)
    sm = env.load()
    sessions = list(sm.stored_sessions())
    env.close()
    raw = lmdb.open(path, max_dbs=16, map_size=DEFAULT_MAP_SIZE)  # StateEnv's: room to grow
    with raw.begin(write=True) as txn:
        responses_db = raw.open_db(b"session_responses", txn=txn)
        txn.drop(responses_db, delete=fmt < 3)
        if fmt == 1:
            txn.drop(raw.open_db(b"workload_counts", txn=txn), delete=True)
        sessions_db = raw.open_db(b"sessions", txn=txn)
        activity_db = raw.open_db(b"session_activity", txn=txn)
        for s in sessions:
            key = s.client_id.encode()
            txn.put(s.last_index.to_bytes(8, "big") + key, b"", db=activity_db)
            if fmt < 3:
                txn.put(key, cbor2.dumps([s.owner, *_session_row(s)]), db=sessions_db)
                continue
            head = [s.owner, s.client_id, s.last_index, s.last_ms, s.max_seq]
            txn.put(key, cbor2.dumps(head), db=sessions_db)
            for seq, response in s.responses.items():
                plain = response_to_plain(response)
                txn.put(key + b"\0" + seq.to_bytes(8, "big"), cbor2.dumps(plain), db=responses_db)
        meta_db = raw.open_db(b"meta", txn=txn)
        meta = cbor2.loads(bytes(txn.get(b"state", db=meta_db) or b""))
        meta[0] = fmt
        txn.put(b"state", cbor2.dumps(meta), db=meta_db)
    raw.close()
