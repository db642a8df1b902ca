"""API tokens in the state machine, and sessions bounded per owner (a flood evicts only its own)."""

from __future__ import annotations

from tests.sm.helpers import Log
from univrs.sm import (
    BootstrapToken,
    ClusterStateMachine,
    Created,
    CreateToken,
    ErrorCode,
    Failure,
    OpenSession,
    RevokeToken,
    SessionPolicy,
    Success,
    restore_plain,
    snapshot_plain,
    state_digest,
)
from univrs.sm.tokens import implied

H1, H2, H3 = "ab" * 32, "cd" * 32, "ef" * 32


def test_bootstrap_creates_one_admin_token_once() -> None:
    log = Log()
    assert log(BootstrapToken(id="t0", name="root", secret_hash=H1)) == Created(id="t0", version=1)
    token = log.sm.token_by_hash(H1)
    assert token is not None and token.roles == ("admin",) and token.name == "root"
    again = log(BootstrapToken(id="t9", name="root", secret_hash=H2))
    assert isinstance(again, Failure) and again.code is ErrorCode.ALREADY_EXISTS
    # Even once every token is revoked, nobody can bootstrap again.
    assert isinstance(log(RevokeToken(id="t0")), Success)
    assert log.sm.token_by_hash(H1) is None
    late = log(BootstrapToken(id="t9", name="root", secret_hash=H2))
    assert isinstance(late, Failure) and late.code is ErrorCode.ALREADY_EXISTS


def test_tokens_store_hashes_and_are_revoked() -> None:
    log = Log()
    assert isinstance(
        log(CreateToken(id="t1", name="ci", roles=("read",), secret_hash=H1)), Created
    )
    dup = log(CreateToken(id="t2", name="ci", roles=("read",), secret_hash=H1))
    assert isinstance(dup, Failure) and dup.code is ErrorCode.ALREADY_EXISTS
    bad = log(CreateToken(id="t3", name="x", roles=("root",), secret_hash=H2))
    assert isinstance(bad, Failure) and bad.code is ErrorCode.INVALID_ARGUMENT
    secret_like = log(CreateToken(id="t4", name="x", roles=("read",), secret_hash="hunter2"))
    assert isinstance(secret_like, Failure) and secret_like.code is ErrorCode.INVALID_ARGUMENT
    assert [t.id for t in log.sm.tokens()] == ["t1"]
    gone = log(RevokeToken(id="nope"))
    assert isinstance(gone, Failure) and gone.code is ErrorCode.NOT_FOUND
    assert log.sm.problems() == []


def test_token_table_survives_a_snapshot_and_changes_the_digest() -> None:
    log = Log()
    before = state_digest(log.sm)
    log(BootstrapToken(id="t0", name="root", secret_hash=H1))
    log(CreateToken(id="t1", name="ci", roles=("credits", "write"), secret_hash=H2))
    log(OpenSession(owner="token:t1"))
    plain = snapshot_plain(log.sm)
    assert H1 in str(plain["tokens"])  # the hash; there is no secret anywhere to store
    restored = restore_plain(plain)
    assert snapshot_plain(restored) == plain
    assert state_digest(restored) == state_digest(log.sm) != before
    assert restored.tokens_bootstrapped
    assert restored.sessions_of("token:t1") == 1


def test_roles_imply() -> None:
    assert implied(["admin"]) == {"admin", "read", "write", "credits"}
    assert implied(["write"]) == {"write", "read"}
    assert implied(["credits"]) == {"credits"}


def test_a_flood_of_session_opens_evicts_only_the_flooders_sessions() -> None:
    """Issue 12: 10,500 ``session.open`` calls evicted a real client's session. With owners, a
    flood from one identity evicts that identity's own sessions (fails on the old code)."""
    sm = ClusterStateMachine(SessionPolicy(max_sessions=10_000, max_sessions_per_owner=1_000))
    log = Log(sm)
    victim = log(OpenSession(owner="addr:10.0.0.1"))
    assert isinstance(victim, Created)
    for _ in range(10_500):
        log(OpenSession(owner="addr:10.0.0.66"))
    assert sm.has_session(victim.id)
    assert sm.sessions_of("addr:10.0.0.66") == 1_000
    assert sm.problems() == []


def test_a_full_table_evicts_from_the_largest_owner() -> None:
    sm = ClusterStateMachine(SessionPolicy(max_sessions=10, max_sessions_per_owner=8))
    log = Log(sm)
    mine = [log(OpenSession(owner="a")) for _ in range(3)]
    for _ in range(20):
        log(OpenSession(owner="b"))  # b is capped at 8; a's 3 keep their place
    for n in range(4):
        log(OpenSession(owner=f"other{n}"))  # the table is full: b (largest) loses sessions
    assert all(isinstance(r, Created) and sm.has_session(r.id) for r in mine)
    assert sm.sessions_of("b") == 3  # 7 (the table held 10), then 4 evictions
    assert sm.problems() == []
