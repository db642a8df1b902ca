"""Round 18 (s18-apply): the journal puts a batch's response rows together (``putmulti``,
univrs/storage/sm_journal.py ``_write_sessions``). The rule: the ``sessions`` and
``session_responses`` tables hold, after every batch, exactly the rows the one-put-per-row
writer of main wrote (a reference copied here), through keyed writes, retries, stale and gapped
seqs, unknown sessions, opens, closes and expiries."""

from __future__ import annotations

import random
import types
from pathlib import Path
from typing import Any

import cbor2
import lmdb
import pytest

from univrs.sm.commands import CloseSession, CreateWorkload, Envelope, OpenSession, ScaleWorkload
from univrs.sm.model import WorkloadSpec
from univrs.sm.responses import Created, Success
from univrs.sm.sessions import SessionPolicy
from univrs.sm.state import ClusterStateMachine
from univrs.storage.sm_journal import (
    _ROW,
    _SEQ,
    _drop_responses,
    _head_row,
    objects_in_lmdb,
    response_bytes,
)


def _reference_write_sessions(self: Any, txn: lmdb.Transaction, sm: ClusterStateMachine) -> None:
    """``LmdbJournal._write_sessions`` as main had it before round 18 (one put per row)."""
    new, dirty_responses = self._new_sessions, self._dirty_responses
    window = sm.policy.window
    sessions_db, responses_db = self._sessions_db, self._responses_db
    dumps, put, pack, row_head = cbor2.dumps, txn.put, _SEQ.pack, _ROW.pack
    cursor = None
    for client_id in self._dirty_sessions:
        key = client_id.encode()
        session = sm.session(client_id)
        seqs = dirty_responses.get(client_id)
        if session is None:
            txn.delete(key, db=sessions_db)
            if cursor is None:
                cursor = txn.cursor(db=responses_db)
            _drop_responses(cursor, key + b"\0")
            continue
        written = False
        if seqs:
            prefix = key + b"\0"
            for seq in seqs:
                response = session.responses.get(seq)
                if response is not None:
                    put(
                        prefix + pack(seq % window),
                        row_head(seq, session.last_index, session.last_ms)
                        + response_bytes(response),
                        db=responses_db,
                    )
                    written = True
        if not written or client_id in new:
            put(key, dumps(_head_row(session)), db=sessions_db)
    self._dirty_sessions.clear()
    new.clear()
    dirty_responses.clear()


def _state(path: Path, reference: bool) -> tuple[ClusterStateMachine, Any]:
    objects = objects_in_lmdb(str(path))
    sm = ClusterStateMachine(policy=SessionPolicy(window=4, ttl_entries=25), objects=objects)
    if reference:
        journal = objects.journal
        journal._write_sessions = types.MethodType(_reference_write_sessions, journal)  # type: ignore[attr-defined]
    return sm, objects.journal._store  # type: ignore[attr-defined]


def _rows(store: Any) -> list[list[tuple[bytes, bytes]]]:
    with store.env.begin() as txn:
        return [
            [(bytes(k), bytes(v)) for k, v in txn.cursor(db=store.db(name))]
            for name in ("sessions", "session_responses", "meta")
        ]


@pytest.mark.parametrize("seed", range(6))
def test_the_rows_are_those_of_one_put_each(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    states = [_state(tmp_path / "new", False), _state(tmp_path / "ref", True)]
    spec = WorkloadSpec(name="web", image="nginx:1", replicas=1)
    index = 0

    def apply(commands: list[Any]) -> list[Any]:
        nonlocal index
        index += 1
        answers = [sm.apply_batch(commands, index=index, term=1, time_ms=index) for sm, _ in states]
        assert answers[0] == answers[1]
        assert _rows(states[0][1]) == _rows(states[1][1])
        return answers[0]

    apply([CreateWorkload(id="w", spec=spec)])
    clients: dict[str, int] = {}
    written = 0
    for _ in range(60):
        commands: list[Any] = []
        for _ in range(rng.randint(1, 8)):
            roll = rng.random()
            if roll < 0.1 or not clients:
                commands.append(OpenSession())
            elif roll < 0.15:
                commands.append(CloseSession(client_id=rng.choice(sorted(clients))))
            else:
                client = rng.choice([*sorted(clients), "c-gone"])
                seq = clients.get(client, 0) + rng.choice([1, 1, 1, 2, 4, 0, -1, -6])
                seq = max(seq, 1)
                clients[client] = max(clients.get(client, 0), seq)
                command = ScaleWorkload(id="w", replicas=rng.randint(0, 5))
                commands.append(Envelope(command=command, client_id=client, seq=seq))
        for command, answer in zip(commands, apply(commands), strict=True):
            if isinstance(command, OpenSession):
                assert isinstance(answer, Created)
                clients[answer.id] = 0
            written += isinstance(answer, Success)
    assert written > 30  # keyed writes answered (their response rows written)
