"""s14-review2: the session journal's key layout (s14-journal: ``client id + NUL + seq``) assumes
what commands guarantee (client ids of ``id_problem``'s characters, seqs from 1); a snapshot's
session rows must not break it either, or a range delete of one session reaches another's
rows and the env no longer opens.
"""

from __future__ import annotations

from typing import Any

import pytest

from univrs.errors import DecodeError
from univrs.sm import (
    ClusterStateMachine,
    CreateWorkload,
    Envelope,
    OpenSession,
    ScaleWorkload,
    WorkloadSpec,
)
from univrs.sm.responses import Created
from univrs.sm.sessions import SessionPolicy
from univrs.sm.snapshot import snapshot_plain
from univrs.sm.snapshot_read import restore_plain

POLICY = SessionPolicy(window=4, max_sessions=8, ttl_ms=50_000)


def _plain_with_a_session() -> tuple[dict[str, Any], str]:
    sm = ClusterStateMachine(policy=POLICY)
    sm.apply(
        CreateWorkload(id="w0", spec=WorkloadSpec(name="w", image="i:1")),
        index=1,
        term=1,
        time_ms=1_000,
    )
    created = sm.apply(OpenSession(), index=2, term=1, time_ms=1_010)
    assert isinstance(created, Created)
    cmd = Envelope(command=ScaleWorkload(id="w0", replicas=1), client_id=created.id, seq=1)
    sm.apply(cmd, index=3, term=1, time_ms=1_020)
    return snapshot_plain(sm), created.id


def test_a_snapshot_session_whose_client_id_holds_a_nul_is_refused() -> None:
    """Session ``c2`` owns the key range ``c2 + NUL``: a session ``c2 + NUL + x`` (no command
    can open one) would have its response rows inside it, so closing or expiring ``c2``
    deleted them, and reading ``c2`` back at open met keys of another length (struct.error:
    the node did not start). The reader took any string as a client id."""
    plain, client = _plain_with_a_session()
    row = list(plain["sessions"][0])
    assert row[0] == client
    hostile = [client + "\x00x", row[1] + 1, *row[2:]]  # later activity: order kept
    plain["sessions"] = [row, hostile]
    with pytest.raises(DecodeError, match="client"):
        restore_plain(plain)


def test_a_snapshot_session_caching_seq_zero_is_refused() -> None:
    """Seqs start at 1 (``seq must be a positive integer``); a snapshot's session with
    ``max_seq`` 0 and a response to seq 0 passed the window check ((0 - window, 0]). In
    memory seq 0 leaves the window when the session reaches seq ``window``; the LMDB journal
    cuts only seqs <= ``max_seq - window`` when that is > 0, so its row for seq 0 stayed and
    the env refused to open (``caches responses outside its window``)."""
    plain, _ = _plain_with_a_session()
    row = list(plain["sessions"][0])
    # [client id, last index, last ms, max seq, n, seq, response, ...]: seq 1 -> seq 0
    assert row[3] == 1 and row[4] == 1 and row[5] == 1
    row[3], row[5] = 0, 0
    plain["sessions"] = [row]
    with pytest.raises(DecodeError, match="seq"):
        restore_plain(plain)
