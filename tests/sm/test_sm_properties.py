"""Hypothesis properties of the state machine (see strategies.py for the command sequences).

* two replicas applying the same commands answer the same and end in the same state;
* snapshot then restore is the identity at any point, and the copy goes on identically;
* credits are never negative and the total changes only by successful mints;
* a retried command is never applied twice;
* no instance is ever an orphan (of a workload or a node), whatever is deleted;
* a command under another owner's session changes nothing (s14-owner).
"""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sm.helpers import objects, small_policy
from tests.sm.strategies import Client, steps
from univrs.sm import (
    ClusterStateMachine,
    DeleteWorkload,
    DeregisterNode,
    Envelope,
    ErrorCode,
    Failure,
    MintCredits,
    SessionPolicy,
    Success,
    restore_plain,
    snapshot_plain,
    state_digest,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def policy() -> SessionPolicy:
    return small_policy(window=4, max_sessions=3, ttl_entries=25, ttl_ms=200_000)


def inner(sent: Any) -> Any:
    return sent.command if isinstance(sent, Envelope) else sent


def check_invariants(sm: ClusterStateMachine) -> None:
    assert sm.problems() == []
    assert all(amount > 0 for amount in sm.balances().values())
    live_workloads = {w.id for w in sm.list_workloads()}
    live_nodes = {n.id for n in sm.list_nodes()}
    for instance in sm.list_instances():
        assert instance.workload_id in live_workloads
        assert instance.node_id is None or instance.node_id in live_nodes


def check_replicas_that_apply_the_same_commands_agree(script: list[Any]) -> None:
    a, b = ClusterStateMachine(policy()), ClusterStateMachine(policy())
    client = Client()
    for index, (command, wrap, delta) in enumerate(script, start=1):
        time_ms = client.time(delta)
        sent = client.envelope(command, wrap, a)
        response = a.apply(sent, index=index, term=1, time_ms=time_ms)
        assert b.apply(sent, index=index, term=1, time_ms=time_ms) == response
        client.learn(sent, response)
        check_invariants(a)
    assert snapshot_plain(a) == snapshot_plain(b)
    assert cbor2.dumps(snapshot_plain(a)) == cbor2.dumps(snapshot_plain(b))
    assert state_digest(a) == state_digest(b)


def check_snapshot_then_restore_is_the_identity_at_any_point(script: list[Any], data: Any) -> None:
    cut = data.draw(st.integers(0, len(script)), label="cut")
    sm = ClusterStateMachine(policy())
    client = Client()
    copy: ClusterStateMachine | None = None
    for index, (command, wrap, delta) in enumerate(script, start=1):
        time_ms = client.time(delta)
        if index - 1 == cut:
            plain = snapshot_plain(sm)
            copy = restore_plain(cbor2.loads(cbor2.dumps(plain)))
            assert snapshot_plain(copy) == plain
            assert state_digest(copy) == state_digest(sm)
            assert copy.problems() == []
        sent = client.envelope(command, wrap, sm)
        response = sm.apply(sent, index=index, term=1, time_ms=time_ms)
        if copy is not None:
            assert copy.apply(sent, index=index, term=1, time_ms=time_ms) == response
        client.learn(sent, response)
    if copy is None:
        copy = restore_plain(cbor2.loads(cbor2.dumps(snapshot_plain(sm))))
    assert snapshot_plain(copy) == snapshot_plain(sm)
    assert state_digest(copy) == state_digest(sm)


def check_credits_are_never_negative_and_only_mints_change_the_total(script: list[Any]) -> None:
    sm = ClusterStateMachine(policy())
    client = Client()
    for index, (command, wrap, delta) in enumerate(script, start=1):
        time_ms = client.time(delta)
        sent = client.envelope(command, wrap, sm)
        supply = sm.total_supply
        response = sm.apply(sent, index=index, term=1, time_ms=time_ms)
        client.learn(sent, response)
        minted = isinstance(inner(sent), MintCredits) and response == Success(version=index)
        assert sm.total_supply == supply + (inner(sent).amount if minted else 0)
        assert sum(sm.balances().values()) == sm.total_supply
        assert all(amount > 0 for amount in sm.balances().values())


def check_a_retried_command_is_never_applied_twice(script: list[Any]) -> None:
    sm = ClusterStateMachine(policy())
    client = Client()
    answered: dict[tuple[str | None, int | None], Any] = {}
    retries = 0
    for index, (command, wrap, delta) in enumerate(script, start=1):
        time_ms = client.time(delta)
        sent = client.envelope(command, wrap, sm)
        key = (sent.client_id, sent.seq) if isinstance(sent, Envelope) else None
        before = objects(sm)
        response = sm.apply(sent, index=index, term=1, time_ms=time_ms)
        client.learn(sent, response)
        if key is None:
            continue
        if key in answered:
            retries += 1
            # Nothing changes, and the answer is the first one's, or a session error saying
            # the state machine can no longer tell (which also applies nothing).
            assert objects(sm) == before
            assert response == answered[key] or (
                isinstance(response, Failure)
                and response.code in (ErrorCode.SESSION_EXPIRED, ErrorCode.STALE_SEQUENCE)
            )
        elif not (
            isinstance(response, Failure)
            and response.code in (ErrorCode.SESSION_EXPIRED, ErrorCode.STALE_SEQUENCE)
        ):
            answered[key] = response


def check_a_command_under_another_owners_session_changes_nothing(script: list[Any]) -> None:
    """s14-owner: a keyed command whose envelope names an owner other than its session's
    (a known one) is refused as session-expired and changes no object and nothing of the
    session (its slots, its activity)."""
    sm = ClusterStateMachine(policy())
    client = Client()
    for index, (command, wrap, delta) in enumerate(script, start=1):
        time_ms = client.time(delta)
        sent = client.envelope(command, wrap, sm)
        keyed = isinstance(sent, Envelope) and sent.client_id is not None
        session = sm.session(sent.client_id) if keyed else None
        foreign = (
            session is not None
            and sent.owner is not None
            and session.owner != ""
            and session.owner != sent.owner
        )
        if foreign:
            assert session is not None
            was = (session.last_index, session.last_ms, session.max_seq, dict(session.responses))
            before = objects(sm)
        response = sm.apply(sent, index=index, term=1, time_ms=time_ms)
        client.learn(sent, response)
        if foreign:
            assert isinstance(response, Failure) and response.code is ErrorCode.SESSION_EXPIRED
            assert objects(sm) == before
            after = sm.session(sent.client_id)
            if after is not None:  # (it may have expired by this entry's time: not its doing)
                now = (after.last_index, after.last_ms, after.max_seq, dict(after.responses))
                assert now == was
        check_invariants(sm)


def check_deleting_a_workload_or_node_leaves_no_orphan_instances(script: list[Any]) -> None:
    sm = ClusterStateMachine(policy())
    client = Client()
    for index, (command, wrap, delta) in enumerate(script, start=1):
        time_ms = client.time(delta)
        sent = client.envelope(command, wrap, sm)
        response = sm.apply(sent, index=index, term=1, time_ms=time_ms)
        client.learn(sent, response)
        target = inner(sent)
        if response == Success(version=index) and isinstance(target, DeleteWorkload):
            assert sm.list_instances(workload_id=target.id) == []
            assert all(i.workload_id != target.id for i in sm.list_instances())
        if response == Success(version=index) and isinstance(target, DeregisterNode):
            assert sm.list_instances(node_id=target.id) == []
            assert all(i.node_id != target.id for i in sm.list_instances())
        check_invariants(sm)


@SETTINGS
@given(steps)
def test_replicas_that_apply_the_same_commands_agree(script: list[Any]) -> None:
    check_replicas_that_apply_the_same_commands_agree(script)


@SETTINGS
@given(steps, st.data())
def test_snapshot_then_restore_is_the_identity_at_any_point(script: list[Any], data: Any) -> None:
    check_snapshot_then_restore_is_the_identity_at_any_point(script, data)


@SETTINGS
@given(steps)
def test_credits_are_never_negative_and_only_mints_change_the_total(script: list[Any]) -> None:
    check_credits_are_never_negative_and_only_mints_change_the_total(script)


@SETTINGS
@given(steps)
def test_a_retried_command_is_never_applied_twice(script: list[Any]) -> None:
    check_a_retried_command_is_never_applied_twice(script)


@SETTINGS
@given(steps)
def test_deleting_a_workload_or_node_leaves_no_orphan_instances(script: list[Any]) -> None:
    check_deleting_a_workload_or_node_leaves_no_orphan_instances(script)


@SETTINGS
@given(steps)
def test_a_command_under_another_owners_session_changes_nothing(script: list[Any]) -> None:
    check_a_command_under_another_owners_session_changes_nothing(script)
