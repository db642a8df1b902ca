"""The membership rule for senders and the core's other refusals (issue 12, item 5).

A forged message must change nothing on a member: not its term, log, commit, leader or state
machine. Each forgery here also runs against the ``AcceptStrangers`` mutant, which takes it,
so the test shows the scenario would catch a core without the rule.
"""

from __future__ import annotations

import attrs
import pytest
from senders_helpers import (
    UNBOUND,
    M,
    follower,
    forged_append,
    forged_snapshot,
    hb,
    rule,
    view,
)

from univrs.raft import (
    AppendEntries,
    Entry,
    EntryKind,
    Heartbeat,
    Membership,
    Message,
    RaftConfig,
    RequestVote,
    RequestVoteResponse,
    Role,
    SnapshotMeta,
    TimeoutNow,
)
from univrs.raft.senders import sender_refusal
from univrs.sim.mutants import AcceptStrangers, LiveLeaderAnyIncarnation

FORGERIES: dict[str, tuple[Message, str]] = {
    "append from a made-up peer": (forged_append("mallory", 3), "stranger"),
    "append as the leader, another incarnation": (
        forged_append("n1", 2, incarnation="forged"),
        "incarnation",
    ),
    "append as the leader, nothing attested": (forged_append("n1", 2), "incarnation"),
    "snapshot from a made-up peer": (forged_snapshot("mallory"), "stranger"),
    "vote request from a made-up peer": (
        RequestVote(term=9, src="mallory", dst="n2", last_log_index=99, last_log_term=9),
        "stranger",
    ),
    "pre-vote from a made-up peer": (
        RequestVote(
            term=9, src="mallory", dst="n2", last_log_index=99, last_log_term=9, pre_vote=True
        ),
        "stranger",
    ),
    "timeout-now from a made-up peer": (TimeoutNow(term=2, src="mallory", dst="n2"), "stranger"),
    "heartbeat from a made-up peer": (
        Heartbeat(term=5, src="mallory", dst="n2", commit=2),
        "stranger",
    ),
}


@pytest.mark.parametrize("case", sorted(FORGERIES))
def test_a_forgery_changes_nothing_and_is_counted(case: str) -> None:
    msg, reason = FORGERIES[case]
    node = follower()
    before = node.status()
    node.step(msg)
    node.ready()
    after = node.status()
    assert view(after) == view(before)
    assert after.refused == ((reason, 1),) and after.refused_messages == 1
    if isinstance(msg, RequestVote):
        return  # (a follower in its leader's lease ignores these anyway: CheckQuorum)
    # The mutant without the rule takes the same message: the forgery is a real one.
    mutant = follower(AcceptStrangers)
    mutant.step(msg)
    rd = mutant.ready()
    answered = rd.messages + rd.messages_after_persist
    assert view(mutant.status()) != view(before) or answered


def test_the_real_leader_is_still_heard_after_forgeries() -> None:
    node = follower()
    for msg, _ in FORGERIES.values():
        node.step(msg)
    node.step(forged_append("n1", 2, incarnation="inc1"))  # the leader itself (same bytes)
    node.ready()
    s = node.status()
    assert (s.term, s.leader, s.last_index) == (2, "n1", 3)
    assert s.refused_messages == len(FORGERIES)


def test_a_follower_hears_its_live_leaders_id_only_at_the_incarnation_it_hears_it_at() -> None:
    """Red team (tests/api/test_redteam_raft.py): while a follower's configuration binds the
    leader to no incarnation yet, a hello under the leader's id with a made-up incarnation (or
    naming none) had its AppendEntries taken as the leader's: a forged credit mint committed.
    Every message type from the live leader's id at another incarnation is refused now."""
    forgeries: list[Message] = [
        forged_append("n1", 2, incarnation="forged"),
        forged_append("n1", 2),  # a hello naming no incarnation: nothing attested
        forged_append("n1", 3, incarnation="forged"),  # a term ahead
        attrs.evolve(forged_snapshot("n1"), term=2, sender_incarnation="forged"),
        Heartbeat(term=2, src="n1", dst="n2", commit=2, sender_incarnation="forged"),
        TimeoutNow(term=2, src="n1", dst="n2", sender_incarnation="forged"),
        RequestVote(
            term=3,
            src="n1",
            dst="n2",
            last_log_index=9,
            last_log_term=2,
            transfer=True,
            sender_incarnation="forged",
        ),
    ]
    node = follower(membership=UNBOUND)
    for i, msg in enumerate(forgeries, 1):
        before = node.status()
        node.step(msg)
        rd = node.ready()
        after = node.status()
        assert view(after) == view(before), msg
        assert after.refused == (("incarnation", i),), msg
        assert not rd.messages and not rd.messages_after_persist and rd.snapshot is None
    # The leader itself, at the incarnation it is heard at, is still heard.
    node.step(forged_append("n1", 2, incarnation="inc1"))
    node.ready()
    assert (node.status().leader, node.status().last_index) == ("n1", 3)
    # Once the leader went quiet, its term still has one leader at one incarnation: a
    # forgery of that term is refused ...
    for _ in range(node.config.election_ticks_min):
        node.tick()
    node.ready()
    assert node.status().role is Role.FOLLOWER and node.status().leader == "n1"
    late = attrs.evolve(forged_append("n1", 2, incarnation="forged"), prev_log_index=3)
    node.step(late)
    assert node.status().refused == (("incarnation", len(forgeries) + 1),)
    assert node.status().last_index == 3
    # ... but the id at another incarnation may lead a later term (a member replaced while
    # this node's configuration lags: senders.py), and is then heard at that one.
    replaced = attrs.evolve(forged_append("n1", 3, incarnation="inc1b"), prev_log_index=3)
    replaced = attrs.evolve(
        replaced, prev_log_term=2, entries=(Entry(term=3, index=4, kind=EntryKind.NOOP),)
    )
    node.step(replaced)
    node.ready()
    s = node.status()
    assert (s.term, s.leader, s.last_index) == (3, "n1", 4)
    node.step(attrs.evolve(replaced, sender_incarnation="inc1"))
    assert node.status().refused[-1] == ("incarnation", len(forgeries) + 2)
    # The core without the rule (the simulator's mutant) takes the first forgery: the mint.
    mutant = follower(LiveLeaderAnyIncarnation, membership=UNBOUND)
    mutant.step(forgeries[0])
    mutant.ready()
    assert mutant.status().last_index == 3 and mutant.status().refused_messages == 0


def test_the_legitimate_cases_of_the_rule() -> None:
    old = Membership(voters=frozenset({"n1", "n2", "n3"}))
    without_me = Membership(voters=frozenset({"n1", "n3"}))
    empty = Membership(voters=frozenset())
    # A fresh or wiped node (empty configuration) judges no one.
    assert rule(hb("n9"), empty, live=None) is None
    assert (
        rule(RequestVote(term=3, src="n9", dst="n2", last_log_index=0, last_log_term=0), empty)
        is None
    )
    # A joiner replaying an old log that does not list it yet hears its (unlisted) leader.
    assert rule(hb("n9"), without_me, live="n1") is None
    # A member that lagged behind the change adding the leader hears it once its own leader
    # went quiet (no live leader) ...
    assert rule(hb("n9"), old, live=None) is None
    # ... or once it follows it; but not while it follows a live leader.
    assert rule(hb("n9"), old, live="n9", live_inc=None) is None
    assert rule(hb("n9"), old, live="n1") == "stranger"
    # A removed leader handing over (TimeoutNow) is still the leader we follow.
    assert rule(TimeoutNow(term=3, src="n9", dst="n2"), old, live="n9", live_inc=None) is None
    # Vote requests from strangers only while we follow no live leader (the election's own
    # rules then judge the candidate: simulator, 3 nodes, seed 7115); answers never.
    vote = RequestVote(term=3, src="n9", dst="n2", last_log_index=9, last_log_term=3)
    assert rule(vote, old, live="n1") == "stranger"
    assert rule(vote, old, live=None) is None
    answer = RequestVoteResponse(term=3, src="n9", dst="n2", granted=True)
    assert rule(answer, old, live=None) == "stranger"
    # The committed configuration and a leader's tracked peers count too.
    assert (
        sender_refusal(vote, me="n2", current=without_me, committed=old, live_leader="n1")
        == "stranger"
    )
    removed = RequestVote(term=3, src="n2", dst="n1", last_log_index=9, last_log_term=3)
    assert (
        sender_refusal(removed, me="n1", current=without_me, committed=old, live_leader="n1")
        is None
    )
    assert (
        sender_refusal(
            removed,
            me="n1",
            current=without_me,
            committed=without_me,
            live_leader="n1",
            tracked={"n2"},
        )
        is None
    )
    # An attested incarnation is checked where the configuration binds one, and against the
    # incarnation we hear our live leader at: a configuration that binds the leader to none
    # yet does not make its id at another incarnation our leader.
    assert rule(forged_append("n3", 2, incarnation="x"), old) is None
    assert rule(forged_append("n1", 2, incarnation="x"), old) == "incarnation"
    assert rule(forged_append("n1", 2, incarnation="x"), old, live_inc=None) is None
    assert rule(forged_append("n1", 2, incarnation="x"), M) == "incarnation"
    assert rule(forged_append("n3", 2), M, live_inc=None) is None  # nothing to compare
    assert rule(forged_append("n1", 2), M) == "incarnation"  # not the one we hear it at
    # Our listing may be the stale one (the leader was replaced while we lagged): a leader of
    # another incarnation is adopted when we follow none, and then heard at that incarnation.
    assert rule(forged_append("n1", 2, incarnation="x"), M, live=None) is None
    assert rule(forged_append("n1", 2, incarnation="x"), M, live_inc="x") is None
    assert rule(forged_append("n1", 2, incarnation="y"), M, live_inc="x") == "incarnation"
    vote = RequestVote(term=3, src="n3", dst="n2", last_log_index=9, last_log_term=3)
    assert rule(attrs.evolve(vote, sender_incarnation="x"), M, live="n1") == "incarnation"


# ---- snapshots and entries a member cannot take -----------------------------------------------


def test_an_oversized_snapshot_is_refused_before_anything_is_held() -> None:
    node = follower(config=RaftConfig(max_snapshot_bytes=64))
    before = node.status()
    part = forged_snapshot("n1", b"x" * 32, total=128)
    meta = attrs.evolve(part.meta, term=2)  # no leader sends a snapshot of a later term
    node.step(attrs.evolve(part, done=False, term=2, meta=meta, sender_incarnation="inc1"))
    node.ready()
    after = node.status()
    assert view(after) == view(before)
    assert after.refused == (("snapshot_size", 1),)


def test_a_snapshot_the_state_machine_cannot_restore_is_refused_and_the_node_keeps_its_state() -> (
    None
):
    checked: list[bytes] = []

    def check(meta: SnapshotMeta, data: bytes) -> str | None:
        checked.append(data)
        return None if data == b"good" else "not a state-machine snapshot"

    node = follower(snapshot_check=check)
    before = node.status()
    garbage = forged_snapshot("n1", b"\xa1\x61a\x01")
    meta = attrs.evolve(garbage.meta, term=2)  # no leader sends a snapshot of a later term
    garbage = attrs.evolve(garbage, term=2, meta=meta, sender_incarnation="inc1")
    node.step(garbage)
    rd = node.ready()
    after = node.status()
    assert rd.snapshot is None  # nothing to store, nothing to restore
    assert view(after) == view(before) and after.refused == (("snapshot_data", 1),)
    assert checked == [b"\xa1\x61a\x01"]
    good = attrs.evolve(
        forged_snapshot("n1", b"good"), term=2, meta=meta, sender_incarnation="inc1"
    )
    node.step(good)
    rd = node.ready()
    assert rd.snapshot is not None and rd.snapshot.meta.index == 50


def test_a_configuration_entry_that_does_not_decode_is_refused() -> None:
    node = follower()
    before = node.status()
    bad = AppendEntries(
        term=2,
        src="n1",
        dst="n2",
        prev_log_index=2,
        prev_log_term=2,
        entries=(Entry(term=2, index=3, kind=EntryKind.CONFIG, data=b"\xff not json"),),
        commit=2,
        sender_incarnation="inc1",
    )
    node.step(bad)  # once stored, the node would crash at every start
    node.ready()
    after = node.status()
    assert view(after) == view(before) and after.refused == (("entry", 1),)
    assert after.role is Role.FOLLOWER
