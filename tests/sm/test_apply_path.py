"""Round 18 (s18-apply) on the state machine's apply path: a scale's common case written out
(``CommandHandlers._scale_workload``) answers and changes exactly what the general path does,
for every kind of argument; a keyed command's client id is checked once per id (memo) with the
same answers; and a batch entry is one batch (one commit of a persistent state, with its
applied index), not one per command."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sm.strategies import Client, steps
from univrs.sm import validate as validate_module
from univrs.sm.commands import (
    CloseSession,
    CreateWorkload,
    Envelope,
    OpenSession,
    ScaleWorkload,
)
from univrs.sm.handlers import _find, _stored_workload, invalid, not_found
from univrs.sm.model import WorkloadSpec, with_replicas
from univrs.sm.objects import AppliedChanges, StoredWorkload
from univrs.sm.responses import Created, Response, Success
from univrs.sm.sessions import SessionPolicy
from univrs.sm.snapshot import state_digest
from univrs.sm.state import ClusterStateMachine
from univrs.sm.validate import replicas_problem

SPEC = WorkloadSpec(name="web", image="nginx:1.27", replicas=2)


def _general_scale(sm: ClusterStateMachine, cmd: ScaleWorkload, index: int) -> Response:
    """The scale handler as it was before round 18 (the general path)."""
    objects = sm._objects
    problem = replicas_problem(cmd.replicas)
    if problem:
        return invalid(problem)
    stored, failure = _find("workload", objects.workload, cmd.id, cmd.expected_version)
    if failure or stored is None:
        return failure or not_found("workload", cmd.id)
    spec = with_replicas(stored.spec, cmd.replicas)
    objects.put_workload(_stored_workload(stored.id, spec, index, stored.created_index))
    return Success(version=index)


def _fresh() -> ClusterStateMachine:
    sm = ClusterStateMachine()
    sm.apply(CreateWorkload(id="w", spec=SPEC), index=1, term=1)
    sm.apply(ScaleWorkload(id="w", replicas=3), index=2, term=1)  # version 2
    return sm


REPLICAS: list[Any] = [0, 1, 5, 100_000, 100_001, -1, True, False, 2.0, "3", None, 2**70]
IDS: list[Any] = ["w", "x", "", 7, None, b"w"]
EXPECTED: list[Any] = [None, 2, 1, 3, 0, -1, True, 2**63 - 1, 2**63, "2", 2.0]


def test_the_scales_fast_path_answers_and_changes_what_the_general_path_does() -> None:
    for replicas, ident, expected in itertools.product(REPLICAS, IDS, EXPECTED):
        cmd = ScaleWorkload(id=ident, replicas=replicas, expected_version=expected)
        fast, slow = _fresh(), _fresh()
        answer = fast.apply(cmd, index=3, term=1)
        slow.mark_applied(index=3, term=1)
        slow._objects.changes.clear()
        reference = _general_scale(slow, cmd, slow.revision)
        assert answer == reference and type(answer) is type(reference), (cmd, answer, reference)
        assert list(fast.stored_workloads()) == list(slow.stored_workloads())
        assert state_digest(fast) == state_digest(slow)
        if isinstance(answer, Success):
            (w,) = fast.stored_workloads()
            assert (w.version, w.spec.replicas, w.spec) == (
                3,
                replicas,
                with_replicas(SPEC, replicas),
            )


def test_a_client_id_is_answered_alike_checked_or_remembered() -> None:
    sm = ClusterStateMachine()
    opened = sm.apply(OpenSession(), index=1, term=1)
    assert isinstance(opened, Created)
    sm.apply(CreateWorkload(id="w", spec=SPEC), index=2, term=1)
    bad_ids: list[Any] = ["", "bad id", "x/y", 5, b"c", "-lead", "a" * 300]
    index = 2
    for first_time in (True, False):
        if first_time:
            validate_module.VALID_IDS.clear()
        for client_id in [opened.id, "c-unknown", *bad_ids]:
            index += 1
            cmd = Envelope(
                command=ScaleWorkload(id="w", replicas=1), client_id=client_id, seq=index
            )
            answer = sm.apply(cmd, index=index, term=1)
            if client_id == opened.id:
                assert answer == Success(version=index)
            elif client_id == "c-unknown":
                assert "is unknown" in answer.message  # type: ignore[union-attr]
            else:
                assert "client_id" in answer.message  # type: ignore[union-attr]
    assert all(type(i) is str for i in validate_module.VALID_IDS)
    assert not set(validate_module.VALID_IDS) & {i for i in bad_ids if type(i) is str}


def test_a_batch_entry_is_one_commit_of_a_persistent_state(tmp_path: Path) -> None:
    from univrs.storage.sm_tables import StateEnv

    env = StateEnv(str(tmp_path / "state"))
    sm = env.load()
    commits: list[int] = []
    flush = env.store.before_commit
    assert flush is not None

    def counted(txn: Any) -> None:
        commits.append(sm.last_applied_index)
        flush(txn)

    env.store.before_commit = counted
    sm.apply(OpenSession(), index=1, term=1)
    creates = [CreateWorkload(id=f"w{i}", spec=SPEC) for i in range(5)]
    sm.apply_batch(creates, index=2, term=1)
    sm.apply_batch([ScaleWorkload(id=f"w{i}", replicas=i) for i in range(5)], index=3, term=1)
    assert commits == [1, 2, 3]  # one per entry (it was one per command of a batch entry)
    digest = state_digest(sm)
    env.close()
    again = StateEnv(str(tmp_path / "state")).load()
    assert state_digest(again) == digest and again.last_applied_index == 3


def _reference_last_changes(sm: ClusterStateMachine) -> AppliedChanges:
    """``last_changes`` as it was before round 18 (no one-workload fast path)."""
    changes = sm._objects.changes
    if not changes:
        return AppliedChanges(sm.revision, ())
    counts = sm._objects.instance_counts
    items: list[Any] = []
    seen: dict[str, Any] = {}
    for kind, ident, before, after in changes:
        was: Any = before
        now: Any = after
        if isinstance(before, StoredWorkload):
            found = seen.get(before.id)
            if found is None:
                found = seen[before.id] = counts(before.id)
            was = (before, found)
        if isinstance(after, StoredWorkload):
            found = seen.get(after.id)
            if found is None:
                found = seen[after.id] = counts(after.id)
            now = (after, found)
        items.append((kind, ident, was, now))
    return AppliedChanges(sm.revision, tuple(items))


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.integers(1, 6))
def test_last_changes_are_those_of_the_general_capture(script: list[Any], chunk: int) -> None:
    """Mixed commands (creates, scales, updates, deletes with cascades, instances, nodes),
    some in batch entries: after every command, ``last_changes`` equals the general capture's
    (the same items, the same counts objects' values)."""
    sm = ClusterStateMachine()
    client = Client()

    def check(revision: int, changes: AppliedChanges) -> None:
        assert changes == _reference_last_changes(sm)
        assert changes.events() == _reference_last_changes(sm).events()

    for index, at in enumerate(range(0, len(script), chunk), start=1):
        part = script[at : at + chunk]
        sent = [client.envelope(command, wrap, sm) for command, wrap, _ in part]
        time_ms = client.time(part[-1][2])
        responses = sm.apply_batch(sent, index=index, term=1, time_ms=time_ms, each=check)
        for envelope, answer in zip(sent, responses, strict=True):
            client.learn(envelope, answer)


class _GeneralEnvelope(Envelope):
    """An envelope the keyed write's written-out path (s30) does not take (its type is not
    ``Envelope``): ``ClusterStateMachine._command``'s general path, as before."""

    __slots__ = ()


def _keyed_script(seed: int) -> list[list[Envelope]]:
    """Entries of keyed commands of every kind of client id, seq and owner: valid ones,
    retries, stale seqs, gaps, unknown or malformed ids, other owners, session commands."""
    import random

    rnd = random.Random(seed)
    ids: list[Any] = ["c2", "c3", "c4", "c5", "nobody", "", "bad id", "a\x00b", 7, None]
    owners: list[Any] = [None, "alice", "bob", "", "x" * 300, "a\x00", 5]
    seqs: list[Any] = [1, 2, 3, 5, 9, 12, 20, 0, -1, True, 2**63, None, "3"]
    commands: list[Any] = [
        ScaleWorkload(id="w", replicas=4),
        ScaleWorkload(id="w", replicas=-1),
        ScaleWorkload(id="v", replicas=2, expected_version=1),
        CreateWorkload(id="v", spec=SPEC),
        OpenSession(),
        CloseSession(client_id="c2"),
    ]
    entries = []
    for _ in range(60):
        entry = []
        for _ in range(rnd.randint(1, 12)):
            seq = rnd.choice(seqs)
            if isinstance(seq, int) and not isinstance(seq, bool) and 0 < seq < 100:
                seq += rnd.randint(0, 6)
            entry.append(
                Envelope(
                    command=rnd.choice(commands),
                    client_id=rnd.choice(ids),
                    seq=seq,
                    owner=rnd.choice(owners),
                )
            )
        entries.append(entry)
    return entries


def _sessions_opened(sm: ClusterStateMachine) -> None:
    """Sessions c2 (alice), c3 (bob), c4 (no owner), c5 (alice), a workload "w"."""
    sm.apply(CreateWorkload(id="w", spec=SPEC), index=1, term=1)
    for index, owner in ((2, "alice"), (3, "bob"), (4, None), (5, "alice")):
        opened = sm.apply(OpenSession(owner=owner), index=index, term=1)
        assert isinstance(opened, Created) and opened.id == f"c{index}"


def _apply_keyed(
    sm: ClusterStateMachine, entries: list[list[Envelope]], general: bool
) -> list[Any]:
    seen: list[Any] = []
    for offset, entry in enumerate(entries):
        if general:
            entry = [_GeneralEnvelope(**attrs.asdict(e, recurse=False)) for e in entry]
        captured: list[Any] = []
        with sm.batch():
            answers = sm.apply_batch(
                entry, index=10 + offset, term=1, time_ms=1000 * offset, captured=captured
            )
        seen.append((answers, [(r, c.events()) for r, c in captured], sm.revision))
    return seen


@pytest.mark.parametrize("seed", range(6))
def test_a_keyed_write_answers_and_changes_what_the_general_path_does(
    seed: int, tmp_path: Path
) -> None:
    from univrs.storage.sm_tables import StateEnv

    policy = SessionPolicy(window=4, ttl_ms=20_000, max_sessions=6, max_sessions_per_owner=3)
    entries = _keyed_script(seed)
    results, rows = [], []
    for general in (False, True):
        env = StateEnv(str(tmp_path / f"state-{general}"))
        sm = env.load()
        sm.policy = sm._sessions.policy = policy
        _sessions_opened(sm)
        results.append((_apply_keyed(sm, entries, general), state_digest(sm)))
        with env.store.env.begin() as txn:
            rows.append(
                {
                    name: list(txn.cursor(db=env.store.env.open_db(name, txn=txn, create=False)))
                    for name, _ in txn.cursor()
                }
            )
        env.close()
    assert results[0] == results[1]
    assert rows[0] == rows[1]
