"""Batch entries (``ClusterStateMachine.apply_batch``, payload version 2): the commands of one
entry apply at consecutive revisions, each with its own session, sequence number and response.

The property: a random command script applied with its commands packed into batch entries
(and some entries without a command between them) answers every command the same, emits the
same watch events at the same revisions, and ends in the same state (versions, session ids,
created indexes, sessions, digest of the contents) as the same commands applied one entry
each; only the log position (``last_index``) differs, and the revision carries on from the
snapshot. A command that failed to decode fails alone.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sm.helpers import contents, small_policy
from tests.sm.strategies import Client, steps
from univrs.sm import (
    ClusterStateMachine,
    Created,
    CreateWorkload,
    Envelope,
    ErrorCode,
    Failure,
    MintCredits,
    OpenSession,
    SessionPolicy,
    Success,
    restore_plain,
    snapshot_plain,
)
from univrs.sm.errors import AppliedOutOfOrder
from univrs.sm.events import Event
from univrs.sm.objects import AppliedChanges

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BAD = Failure(code=ErrorCode.INVALID_ARGUMENT, message="command is not valid: test")


def policy() -> SessionPolicy:
    return small_policy(window=4, max_sessions=3, ttl_entries=25, ttl_ms=200_000)


def state_of(sm: ClusterStateMachine) -> dict[str, Any]:
    plain = contents(sm)
    plain.pop("last_revision", None)
    plain["clock_ms"] = sm.clock_ms
    plain["revision"] = sm.revision
    return plain


@SETTINGS
@given(steps, st.data())
def test_a_batch_entry_applies_like_its_commands_one_entry_each(
    script: list[Any], data: st.DataObject
) -> None:
    single, batched = ClusterStateMachine(policy()), ClusterStateMachine(policy())
    client = Client()
    single_index = batched_index = 0
    pos = 0
    while pos < len(script):
        if data.draw(st.integers(0, 5), label="noop") == 0:  # an entry without a command
            single_index += 1
            batched_index += 1
            single.mark_applied(index=single_index, term=1)
            batched.mark_applied(index=batched_index, term=1)
            assert single.revision == batched.revision
        size = data.draw(st.integers(1, 6), label="size")
        group = script[pos : pos + size]
        pos += len(group)
        time_ms = client.time(group[0][2])
        sent: list[Any] = []
        expected: list[tuple[Any, tuple[Event, ...], int]] = []
        for k, (command, wrap, _delta) in enumerate(group):
            single_index += 1
            if data.draw(st.integers(0, 15), label="bad") == 0:  # undecodable in the batch
                single.mark_applied(index=single_index, term=1, time_ms=time_ms if k == 0 else None)
                sent.append(BAD)
                expected.append((BAD, single.last_events(), single.revision))
                continue
            envelope = client.envelope(command, wrap, single)
            response = single.apply(
                envelope, index=single_index, term=1, time_ms=time_ms if k == 0 else None
            )
            client.learn(envelope, response)
            sent.append(envelope)
            expected.append((response, single.last_events(), single.revision))
        batched_index += 1
        seen: list[tuple[int, AppliedChanges]] = []

        def each(revision: int, changes: AppliedChanges, seen: Any = seen) -> None:
            seen.append((revision, changes))

        responses = batched.apply_batch(
            sent, index=batched_index, term=1, time_ms=time_ms, each=each
        )
        got = [
            (r, changes.events(), rev) for r, (rev, changes) in zip(responses, seen, strict=True)
        ]
        assert got == expected
        assert batched.revision == single.revision
        assert batched.problems() == []
    assert state_of(batched) == state_of(single)
    assert batched.last_applied_index == batched_index <= single.last_applied_index
    # The revision travels in the snapshot, and the copy goes on identically.
    copy = restore_plain(snapshot_plain(batched))
    assert copy.revision == batched.revision
    assert snapshot_plain(copy) == snapshot_plain(batched)
    for sm, index in ((batched, batched_index + 1), (copy, batched_index + 1)):
        sm.apply(MintCredits(to_peer="px", amount=1, reason="r"), index=index, term=2)
    assert state_of(copy) == state_of(batched)


def test_commands_of_one_entry_take_consecutive_revisions_and_later_entries_follow() -> None:
    sm = ClusterStateMachine()
    sm.mark_applied(index=1, term=1)
    responses = sm.apply_batch(
        [OpenSession(), OpenSession(), CreateWorkload(id="w", spec=_spec())], index=2, term=1
    )
    assert responses == [
        Created(id="c2", version=2),
        Created(id="c3", version=3),
        Created(id="w", version=4),
    ]
    assert (sm.last_applied_index, sm.revision) == (2, 4)
    # The next entry is at index 3, but revision 3 is taken: it applies at 5.
    assert sm.apply(MintCredits(to_peer="p", amount=1, reason="r"), index=3, term=1) == Success(
        version=5
    )
    sm.mark_applied(index=4, term=1)
    assert (sm.last_applied_index, sm.revision) == (4, 6)
    assert snapshot_plain(sm)["last_revision"] == 6


def test_a_session_command_in_a_batch_keeps_its_own_sequence_and_retries_dedup() -> None:
    sm = ClusterStateMachine()
    (opened,) = sm.apply_batch([OpenSession()], index=1, term=1)
    assert isinstance(opened, Created)
    mint = MintCredits(to_peer="p", amount=5, reason="r")
    first = Envelope(command=mint, client_id=opened.id, seq=1)
    second = Envelope(command=mint, client_id=opened.id, seq=2)
    # The same sequence number twice in one batch: the second is the retry, answered alike.
    responses = sm.apply_batch([first, first, second, BAD, second], index=2, term=1)
    assert responses == [
        Success(version=2),
        Success(version=2),
        Success(version=4),
        BAD,
        Success(version=4),
    ]
    assert sm.balance("p") == 10


def test_a_bad_command_fails_alone_and_keeps_its_revision() -> None:
    sm = ClusterStateMachine()
    responses = sm.apply_batch(
        [MintCredits(to_peer="p", amount=1, reason="r"), BAD, CreateWorkload(id="w", spec=_spec())],
        index=1,
        term=1,
    )
    assert responses == [Success(version=1), BAD, Created(id="w", version=3)]
    workload = sm.get_workload("w")
    assert workload is not None and workload.version == 3


def test_a_batch_is_refused_out_of_order_or_empty() -> None:
    sm = ClusterStateMachine()
    sm.apply_batch([OpenSession(), OpenSession()], index=5, term=1)
    with pytest.raises(AppliedOutOfOrder):
        sm.apply_batch([OpenSession()], index=5, term=1)
    with pytest.raises(ValueError, match="at least one"):
        sm.apply_batch([], index=6, term=1)


def test_an_old_snapshot_without_a_revision_restores_at_its_index() -> None:
    sm = ClusterStateMachine()
    sm.apply(OpenSession(), index=7, term=1)
    plain = snapshot_plain(sm)
    assert "last_revision" not in plain  # as before batch entries existed: same digest
    copy = restore_plain(plain)
    assert copy.revision == 7
    bad = dict(plain, last_revision=3)
    with pytest.raises(Exception, match="below the last index"):
        restore_plain(bad)


def _spec() -> Any:
    from tests.sm.helpers import spec

    return spec()
