"""s14-review: replicas of both backends apply random histories identically.

Random batches (instance creates, status changes, deletes, workload deletes, node removals,
scales, commands that fail in the middle of a batch, keyed commands with and without an
owner, with a forged owner) applied as single entries and as batch entries to a memory state
machine and to one on LMDB; after each entry: the same responses, the same digest, the
per-workload counts rows (s14-page) equal to the counts of the instances and sound by
``problems()``; a snapshot restored in memory and staged on LMDB (the one walk and the full
reader) mid-way gives the same counts, and continues to apply the same responses (owners of
sessions kept by the snapshot, s14-owner)."""

from __future__ import annotations

import pathlib
import random
from typing import Any

import pytest

from tests.sm.helpers import node_info, spec
from univrs.runtime.snapshots import capture, restore
from univrs.sm import (
    ClusterStateMachine,
    CreateInstance,
    CreateWorkload,
    DeleteInstance,
    DeleteWorkload,
    DeregisterNode,
    InstanceSpec,
    InstanceStatus,
    NodeStatus,
    RegisterNode,
    ScaleWorkload,
    UpdateInstanceStatus,
    UpdateNodeStatus,
    state_digest,
)
from univrs.sm.commands import Envelope, OpenSession
from univrs.sm.responses import Failure
from univrs.storage import sm_tables
from univrs.storage.sm_journal import _objects_on
from univrs.storage.sm_store import LmdbStore
from univrs.storage.sm_tables import StateEnv

STATUSES = list(InstanceStatus)
OWNERS = ("token:a", "token:b")


def _expected(sm: ClusterStateMachine) -> dict[str, tuple[int, ...]]:
    found: dict[str, list[int]] = {}
    for i in sm.list_instances():
        found.setdefault(i.workload_id, [0] * 5)[STATUSES.index(i.status)] += 1
    return {w: tuple(c) for w, c in found.items()}


def _check(sm: ClusterStateMachine) -> None:
    assert sm.problems() == []
    expected = _expected(sm)
    for w in sm.list_workloads():
        assert tuple(sm._objects.instance_counts(w.id)) == expected.get(w.id, (0,) * 5), w.id


def _command(rng: random.Random, sessions: list[tuple[str, str]], seqs: dict[str, int]) -> Any:
    w, i, n = f"w-{rng.randrange(6)}", f"i-{rng.randrange(40):02}", f"n{rng.randrange(4)}"
    pick = rng.randrange(14)
    if pick == 0:
        cmd: Any = RegisterNode(info=node_info(n))
    elif pick == 1:
        cmd = CreateWorkload(id=w, spec=spec(f"app-{w}", replicas=rng.randrange(1, 4)))
    elif pick in (2, 3, 4):
        cmd = CreateInstance(
            id=i, spec=InstanceSpec(workload_id=w, node_id=n if rng.random() < 0.7 else None)
        )
    elif pick in (5, 6):
        cmd = UpdateInstanceStatus(id=i, status=rng.choice(STATUSES))
    elif pick == 7:
        cmd = DeleteInstance(id=i)
    elif pick == 8:
        cmd = DeleteWorkload(id=w)
    elif pick == 9:
        cmd = DeregisterNode(id=n)
    elif pick == 10:
        cmd = UpdateNodeStatus(id=n, status=rng.choice(list(NodeStatus)))
    elif pick == 11:
        cmd = ScaleWorkload(id=w, replicas=rng.randrange(0, 5))
    elif pick == 12:
        return OpenSession(owner=rng.choice(OWNERS))
    else:
        cmd = UpdateInstanceStatus(id=i, status=rng.choice(STATUSES))
    if sessions and rng.random() < 0.4:  # keyed: its owner, a forger, no owner, a bad one
        client_id, owner = rng.choice(sessions)
        seqs[client_id] = seq = seqs.get(client_id, 0) + rng.choice((0, 1, 1, 1))
        claimed = rng.choice((owner, owner, "token:forger", None, "x" * 5000))
        return Envelope(command=cmd, client_id=client_id, seq=max(seq, 1), owner=claimed)
    return cmd


def _restored_replicas(
    data: bytes, tmp: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> list[ClusterStateMachine]:
    memory = restore(data)
    one_walk = StateEnv(str(tmp / "walk" / "state.lmdb"))
    walked = one_walk.replace(one_walk.stage(data))
    with monkeypatch.context() as m:
        m.setattr(sm_tables, "staged_plain", lambda data, store: None)
        full = StateEnv(str(tmp / "full" / "state.lmdb"))
        fully = full.replace(full.stage(data))
    for sm in (walked, fully):
        _check(sm)
        assert state_digest(sm) == state_digest(memory)
    out = [memory]
    for env in (one_walk, full):  # opened again (state format 2 written by the staging)
        path = env.path
        env.close()
        out.append(StateEnv(path).load())
    return out


@pytest.mark.parametrize("seed", range(6))
def test_random_histories_apply_alike_with_counts_and_owners(
    seed: int, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    replicas = [
        ClusterStateMachine(),
        ClusterStateMachine(objects=_objects_on(LmdbStore(str(tmp_path / "a"), sync=False))),
    ]
    sessions: list[tuple[str, str]] = []
    seqs: dict[str, int] = {}
    refused = counted = 0
    for step in range(90):
        index = step + 1
        batch = [_command(rng, sessions, seqs) for _ in range(rng.randrange(1, 7))]
        time_ms = 1_000 * index
        if len(batch) == 1:
            answers = [
                [sm.apply(batch[0], index=index, term=1, time_ms=time_ms)] for sm in replicas
            ]
        else:
            answers = [
                sm.apply_batch(batch, index=index, term=1, time_ms=time_ms) for sm in replicas
            ]
        assert all(a == answers[0] for a in answers), (step, batch)
        for command, response in zip(batch, answers[0], strict=True):
            if isinstance(command, OpenSession) and not isinstance(response, Failure):
                sessions.append((response.id, command.owner or ""))  # type: ignore[union-attr]
        digests = {state_digest(sm) for sm in replicas}
        assert len(digests) == 1, step
        refused += sum(
            isinstance(c, Envelope) and c.owner == "token:forger" and "unknown" in str(r)
            for c, r in zip(batch, answers[0], strict=True)
        )
        counted += sum(any(c) for c in _expected(replicas[0]).values())
        for sm in replicas:
            _check(sm)
        if step in (40, 75):  # a restore and two stagings join the replicas
            data = capture(replicas[0])()
            assert data == capture(replicas[1])()
            extra = _restored_replicas(data, tmp_path / f"r{step}", monkeypatch)
            (digest,) = digests
            for sm in extra:
                _check(sm)
                assert state_digest(sm) == digest
            replicas = [*replicas[:2], *extra]
    assert refused and counted  # the forged owners were refused, workloads had instances
