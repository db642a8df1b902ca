"""Client sessions: exactly-once retries, the response window, deterministic expiry."""

from __future__ import annotations

import pytest

from tests.sm.helpers import Log, small_policy
from univrs.sm import (
    AppliedOutOfOrder,
    CloseSession,
    ClusterStateMachine,
    Created,
    Envelope,
    ErrorCode,
    Failure,
    MintCredits,
    OpenSession,
    SessionPolicy,
    Success,
    TransferCredits,
    restore_plain,
    snapshot_plain,
)


def mint(amount: int = 10, to: str = "alice") -> MintCredits:
    return MintCredits(to_peer=to, amount=amount, reason="test")


def opened(log: Log, **kw: int | None) -> str:
    response = log(OpenSession(), **kw)
    assert isinstance(response, Created)
    return response.id


def test_open_session_id_comes_from_the_log_index() -> None:
    log = Log()
    log(mint())
    assert log(OpenSession()) == Created(id="c2", version=2)
    assert log.sm.has_session("c2")
    assert not log.sm.has_session("c1")


def test_a_retry_returns_the_stored_response_and_does_not_apply_again() -> None:
    log = Log()
    client = opened(log)
    first = log(Envelope(command=mint(10), client_id=client, seq=1))
    assert first == Success(version=2)
    retry = log(Envelope(command=mint(10), client_id=client, seq=1))
    assert retry == first  # the response of index 2, not a new application at index 3
    assert log.sm.balance("alice") == 10
    assert log(Envelope(command=mint(10), client_id=client, seq=2)) == Success(version=4)
    assert log.sm.balance("alice") == 20


def test_a_retried_failure_stays_a_failure() -> None:
    log = Log()
    client = opened(log)
    pay = Envelope(
        command=TransferCredits(from_peer="alice", to_peer="bob", amount=5), client_id=client, seq=1
    )
    failed = log(pay)
    assert isinstance(failed, Failure) and failed.code == ErrorCode.INSUFFICIENT_CREDITS
    log(mint(100))  # now the transfer could succeed ...
    assert log(pay) == failed  # ... but the retry answers what the first attempt answered
    assert (log.sm.balance("alice"), log.sm.balance("bob")) == (100, 0)


def test_unknown_or_closed_session_is_refused_without_applying() -> None:
    log = Log()
    refused = log(Envelope(command=mint(), client_id="c99", seq=1))
    assert isinstance(refused, Failure) and refused.code == ErrorCode.SESSION_EXPIRED
    client = opened(log)
    assert log(CloseSession(client_id=client)) == Success(version=3)
    refused = log(Envelope(command=mint(), client_id=client, seq=1))
    assert isinstance(refused, Failure) and refused.code == ErrorCode.SESSION_EXPIRED
    assert log.sm.balance("alice") == 0


@pytest.mark.parametrize(
    "envelope",
    [
        Envelope(command=MintCredits(to_peer="a", amount=1, reason="r"), client_id="c1"),
        Envelope(command=MintCredits(to_peer="a", amount=1, reason="r"), seq=1),
        Envelope(command=MintCredits(to_peer="a", amount=1, reason="r"), client_id="c1", seq=0),
        Envelope(command=MintCredits(to_peer="a", amount=1, reason="r"), client_id="c1", seq=True),
        Envelope(command=MintCredits(to_peer="a", amount=1, reason="r"), client_id="", seq=1),
        Envelope(command=OpenSession(), client_id="c1", seq=1),
        Envelope(command=CloseSession(client_id="c1"), client_id="c1", seq=1),
    ],
    ids=["no seq", "no client", "seq 0", "seq bool", "empty client", "open in session", "close"],
)
def test_malformed_session_envelopes_are_invalid(envelope: Envelope) -> None:
    log = Log()
    assert opened(log) == "c1"
    response = log(envelope)
    assert isinstance(response, Failure) and response.code == ErrorCode.INVALID_ARGUMENT
    assert log.sm.balance("a") == 0


def test_window_accepts_reordered_sequence_numbers_and_refuses_stale_ones() -> None:
    log = Log(ClusterStateMachine(small_policy(window=4)))
    client = opened(log)

    def send(seq: int) -> object:
        return log(Envelope(command=mint(1), client_id=client, seq=seq))

    assert isinstance(send(3), Success)
    assert isinstance(send(1), Success)  # reordered, never applied before: applied now
    assert isinstance(send(6), Success)  # window is now (2, 6]: seq 1 is forgotten
    assert log.sm.balance("alice") == 3
    stale = send(1)
    assert isinstance(stale, Failure) and stale.code == ErrorCode.STALE_SEQUENCE
    stale = send(2)
    assert isinstance(stale, Failure) and stale.code == ErrorCode.STALE_SEQUENCE
    assert isinstance(send(3), Success)  # still cached: a retry, not applied again
    assert isinstance(send(4), Success)  # in the window, never applied: applied
    assert log.sm.balance("alice") == 4
    assert isinstance(send(100), Success)  # a jump clears the window
    stale = send(6)
    assert isinstance(stale, Failure) and stale.code == ErrorCode.STALE_SEQUENCE
    assert log.sm.balance("alice") == 5
    assert log.sm.problems() == []


def test_expiry_by_log_entries() -> None:
    log = Log(ClusterStateMachine(small_policy(ttl_entries=3)))
    idle, busy = opened(log), opened(log)  # c1, c2
    log(Envelope(command=mint(), client_id=busy, seq=1))  # 3
    log(mint())  # 4
    log(Envelope(command=mint(), client_id=busy, seq=2))  # 5: c1 idle for 4 entries -> expired
    assert not log.sm.has_session(idle)
    assert log.sm.has_session(busy)
    refused = log(Envelope(command=mint(), client_id=idle, seq=1))
    assert isinstance(refused, Failure) and refused.code == ErrorCode.SESSION_EXPIRED


def test_expiry_by_leader_stamped_time_never_by_a_local_clock() -> None:
    log = Log(ClusterStateMachine(small_policy(ttl_ms=1000)))
    client = opened(log, time_ms=10_000)
    log(mint(), time_ms=10_900)
    log(mint())  # no time carried: the clock does not move
    log(mint(), time_ms=9_000)  # a new leader whose clock is behind: the clock does not go back
    assert log.sm.clock_ms == 10_900
    assert log.sm.has_session(client)
    log(mint(), time_ms=11_001)
    assert not log.sm.has_session(client)


def test_full_table_evicts_the_least_recently_active_session() -> None:
    log = Log(ClusterStateMachine(small_policy(max_sessions=2)))
    a, b = opened(log), opened(log)
    log(Envelope(command=mint(), client_id=a, seq=1))  # a is now more recent than b
    c = opened(log)
    assert (log.sm.has_session(a), log.sm.has_session(b), log.sm.has_session(c)) == (
        True,
        False,
        True,
    )


def test_sessions_and_their_order_survive_snapshot_and_restore() -> None:
    log = Log(ClusterStateMachine(small_policy(max_sessions=2, ttl_entries=50)))
    a, b = opened(log), opened(log)
    first = log(Envelope(command=mint(), client_id=b, seq=1))
    log(Envelope(command=mint(), client_id=a, seq=1))  # order: b, a
    copy = Log(restore_plain(snapshot_plain(log.sm)))
    assert snapshot_plain(copy.sm) == snapshot_plain(log.sm)
    for replica in (log, copy):
        assert replica(Envelope(command=mint(), client_id=b, seq=1)) == first  # cached
        opened(replica)  # evicts the least recent: a (b was just touched by its retry)
        assert (replica.sm.has_session(a), replica.sm.has_session(b)) == (False, True)
    assert snapshot_plain(copy.sm) == snapshot_plain(log.sm)


def test_indexes_must_increase() -> None:
    sm = ClusterStateMachine()
    sm.apply(mint(), index=5, term=2)
    with pytest.raises(AppliedOutOfOrder):
        sm.apply(mint(), index=5, term=2)
    with pytest.raises(AppliedOutOfOrder):
        sm.mark_applied(index=4, term=2)
    sm.mark_applied(index=6, term=3)  # a no-op entry: the position moves, nothing else
    assert (sm.last_applied_index, sm.last_applied_term, sm.balance("alice")) == (6, 3, 10)


@pytest.mark.parametrize(
    "kwargs", [{"window": 0}, {"max_sessions": 0}, {"ttl_entries": 0}, {"ttl_ms": -1}]
)
def test_policy_limits_must_be_positive(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        SessionPolicy(**kwargs)


def test_only_the_owner_closes_a_session() -> None:
    """Red team; fails on the old code: any caller (a read-only token, or anyone with auth
    off) closed any other caller's session by its guessable id (a log position), taking that
    writer's exactly-once retries away."""
    log = Log()
    victim = log(OpenSession(owner="token:writer"))
    assert isinstance(victim, Created)
    refused = log(CloseSession(client_id=victim.id, owner="token:reader"))
    assert isinstance(refused, Failure) and refused.code is ErrorCode.NOT_FOUND
    assert log.sm.has_session(victim.id)
    assert log(CloseSession(client_id=victim.id, owner="token:writer")) == Success(version=3)
    assert not log.sm.has_session(victim.id)
    # Closing an unknown session stays idempotent; entries without an owner close as before.
    assert isinstance(log(CloseSession(client_id="c99", owner="token:reader")), Success)
    other = log(OpenSession(owner="token:writer"))
    assert isinstance(other, Created)
    assert isinstance(log(CloseSession(client_id=other.id)), Success)
    assert not log.sm.has_session(other.id)
