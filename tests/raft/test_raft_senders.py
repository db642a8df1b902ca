"""The membership rule for senders and the core's other refusals (issue 12, item 5).

A forged message must change nothing on a member: not its term, log, commit, leader or state
machine. Each forgery here also runs against the ``AcceptStrangers`` mutant, which takes it,
so the test shows the scenario would catch a core without the rule.
"""

from __future__ import annotations

import random
import zlib

import attrs
import pytest

from univrs.raft import (
    AppendEntries,
    Entry,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    Membership,
    Message,
    RaftConfig,
    RaftNode,
    RequestVote,
    RequestVoteResponse,
    Role,
    SnapshotMeta,
    Status,
    TimeoutNow,
    bootstrap_state,
)
from univrs.raft.senders import sender_refusal
from univrs.sim.mutants import AcceptStrangers, LiveLeaderAnyIncarnation

M = Membership(
    voters=frozenset({"n1", "n2", "n3"}),
    incarnations=(("n1", "inc1"), ("n2", "inc2"), ("n3", "inc3")),
)


def follower(
    cls: type[RaftNode] = RaftNode,
    config: RaftConfig | None = None,
    membership: Membership = M,
    **kw: object,
) -> RaftNode:
    """n2 of ``membership`` (M), following n1 (term 2, heard at incarnation inc1) and just
    heard from it: a healthy member."""
    initial = bootstrap_state(membership)
    node = cls("n2", rng=random.Random(1), initial=initial, config=config, **kw)  # type: ignore[arg-type]
    node.step(
        AppendEntries(
            term=2,
            src="n1",
            dst="n2",
            prev_log_index=1,
            prev_log_term=1,
            entries=(Entry(term=2, index=2, kind=EntryKind.NOOP),),
            commit=2,
            sender_incarnation="inc1",
        )
    )
    rd = node.ready()
    if rd.hard_state is not None:
        node.persisted_hard_state(rd.hard_state)
    node.persisted(2, 2)
    node.ready()
    node.applied(2)
    return node


def view(s: Status) -> tuple[object, ...]:
    return (s.term, s.vote, s.leader, s.role, s.commit, s.last_index, s.last_term, s.applied)


def forged_append(src: str, term: int, *, incarnation: str | None = None) -> AppendEntries:
    """Appends a credit mint at index 3 and commits it."""
    mint = Entry(term=term, index=3, data=b"mint 1000000 credits")
    return AppendEntries(
        term=term,
        src=src,
        dst="n2",
        prev_log_index=2,
        prev_log_term=2,
        entries=(mint,),
        commit=3,
        sender_incarnation=incarnation,
    )


def forged_snapshot(src: str, data: bytes = b"{}", total: int | None = None) -> InstallSnapshot:
    meta = SnapshotMeta(index=50, term=3, membership=M)
    return InstallSnapshot(
        term=3,
        src=src,
        dst="n2",
        meta=meta,
        offset=0,
        data=data,
        done=True,
        total_size=len(data) if total is None else total,
        checksum=zlib.crc32(data),
    )


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


UNBOUND = Membership(voters=frozenset({"n1", "n2", "n3"}))
"""M as a bootstrap configuration lists it: no member bound to an incarnation yet (the runtime
binds them with a later change, runtime/membership.py ``record_incarnations``)."""


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


def rule(
    msg: Message,
    current: Membership,
    *,
    me: str = "n2",
    live: str | None = "n1",
    live_inc: str | None = "inc1",
) -> object:
    return sender_refusal(
        msg, me=me, current=current, committed=current, live_leader=live, live_incarnation=live_inc
    )


def hb(src: str) -> Heartbeat:
    return Heartbeat(term=3, src=src, dst="n2", commit=0)


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


def test_without_unlisted_leaders_a_leaderless_member_refuses_a_made_up_leader() -> None:
    """Plaintext (``RaftConfig.unlisted_leaders`` off, as a node without TLS runs): a member
    whose leader went quiet refuses leader traffic from an id no configuration lists (it used
    to take it: a made-up id appended and committed a mint on it); the leader's id of another
    incarnation (a replaced member that leads now) is still heard, and so is a joiner's
    unlisted leader."""
    config = RaftConfig(unlisted_leaders=False)
    node = follower(config=config)
    for _ in range(config.election_ticks_max + 1):
        node.tick()  # the leader went quiet: no live leader (n2 campaigns, pre-vote only)
    node.ready()
    before = view(node.status())
    for forgery in (forged_append("mallory", 9), forged_snapshot("mallory"), hb("mallory")):
        node.step(attrs.evolve(forgery, term=9))
    assert view(node.status()) == before
    assert node.status().refused == (("stranger", 3),)
    # The rule as the node applies it, case by case.
    old = Membership(voters=frozenset({"n1", "n2", "n3"}))
    without_me = Membership(voters=frozenset({"n1", "n3"}))

    def strict(msg: Message, current: Membership, live: str | None) -> object:
        return sender_refusal(
            msg,
            me="n2",
            current=current,
            committed=current,
            live_leader=live,
            unlisted_leaders=False,
        )

    assert strict(hb("n9"), old, None) == "stranger"
    assert strict(hb("n9"), without_me, "n1") is None  # a joiner hears its unlisted leader
    assert strict(hb("n9"), old, "n9") is None  # the leader we follow (a change removed it)
    assert strict(forged_append("n1", 2, incarnation="x"), M, None) is None  # replaced leader
    # The lagging member: a listed member vouched for n9 in term 3 (or it followed n9 in it).

    def lagging(msg: Message, leader: str | None) -> object:
        return sender_refusal(
            msg,
            me="n2",
            current=old,
            committed=old,
            live_leader=None,
            unlisted_leaders=False,
            unlisted_leader_term=3,
            unlisted_leader=leader,
        )

    assert lagging(hb("n9"), "n9") is None
    assert lagging(hb("mallory"), "n9") == "stranger"  # another id than the vouched one
    assert lagging(attrs.evolve(hb("n9"), term=4), "n9") == "stranger"  # another term
    assert lagging(hb("n9"), None) == "stranger"  # nobody vouched: not even at its term
    # With TLS (the default here) the lagging member still hears an unlisted leader.
    assert rule(hb("n9"), old, live=None) is None


def vouch(src: str, term: int, leader: str, *, pre_vote: bool = True) -> RequestVoteResponse:
    """``src`` rejects n2's (pre-)vote, naming the leader it follows in ``term``."""
    return RequestVoteResponse(
        term=term, src=src, dst="n2", granted=False, pre_vote=pre_vote, leader=leader
    )


def test_without_unlisted_leaders_a_lagging_member_hears_the_leader_listed_peers_vouch_for() -> (
    None
):
    """A member that missed the change adding its leader still catches up from it (the
    simulator's liveness check caught the strict rule: 5 nodes, seed 1033; and the rule
    that heard any unlisted id at a term a listed member showed: 7 nodes, seed 7013, where
    the member learned the term from the unlisted candidate itself): an unlisted leader is
    heard at the node's term once a member it lists vouched for that id in that term (a
    rejected pre-vote naming it). A made-up id is never vouched for: it is refused also in
    an election's window, after a listed candidate showed the node the new term (the old
    rule took it then). Forged vouches count for nothing: from a made-up id (refused), for
    a stale term, or one that grants."""
    config = RaftConfig(unlisted_leaders=False)
    node = follower(config=config)
    for _ in range(config.election_ticks_max + 1):
        node.tick()  # its leader went quiet
    node.ready()
    # A listed member campaigns in term 5: the node adopts term 5 (no leader in it yet).
    node.step(RequestVote(term=5, src="n3", dst="n2", last_log_index=2, last_log_term=2))
    assert node.status().term == 5 and node.status().leader is None
    node.ready()
    refused = 0

    def refused_now() -> int:
        return dict(node.status().refused).get("stranger", 0)

    # The election's window: a forger that knows term 5 is refused (it was taken).
    for forgery in (forged_append("mallory", 5), hb("mallory"), hb("n9")):
        node.step(attrs.evolve(forgery, term=5))
        refused += 1
        assert refused_now() == refused and node.status().leader is None
    assert node.status().last_index == 2
    # Vouches that do not count: from a made-up id (a stranger's vote answer is refused),
    # for a stale term, a granted one.
    node.step(vouch("eve", 5, "mallory"))
    refused += 1
    node.step(vouch("n1", 4, "mallory"))
    node.step(attrs.evolve(vouch("n1", 5, "mallory"), granted=True))
    node.step(hb("mallory"))
    refused += 1
    assert refused_now() == refused and node.status().leader is None
    # A listed member vouches for n9 in term 5: n9 leads the node; mallory still cannot.
    node.step(vouch("n1", 5, "n9"))
    node.step(hb("mallory"))
    refused += 1
    assert refused_now() == refused
    node.step(Heartbeat(term=5, src="n9", dst="n2", commit=2))
    assert node.status().leader == "n9" and node.status().term == 5
    assert refused_now() == refused
    # It loses that leader again (a partition): in term 5 it hears that one leader only.
    for _ in range(config.election_ticks_max + 1):
        node.tick()
    node.ready()
    assert node.status().leader is None
    node.step(Heartbeat(term=5, src="mallory", dst="n2", commit=2))
    refused += 1
    assert refused_now() == refused
    node.step(Heartbeat(term=5, src="n9", dst="n2", commit=2))
    assert node.status().leader == "n9"
    # A vouch of a newer term moves the node to that term, and only its leader is heard.
    for _ in range(config.election_ticks_max + 1):
        node.tick()
    node.ready()
    node.step(vouch("n3", 7, "n8"))
    assert node.status().term == 7 and node.status().leader is None
    node.step(Heartbeat(term=7, src="n9", dst="n2", commit=2))
    refused += 1
    assert refused_now() == refused
    node.step(Heartbeat(term=7, src="n8", dst="n2", commit=2))
    assert node.status().leader == "n8"


def test_without_unlisted_leaders_a_member_at_another_incarnation_vouches_but_never_votes() -> None:
    """A member whose only live listed peer was replaced since its configuration (the peer's
    new data dir runs now, bound by a configuration the member has not seen) refused that
    peer's answers, vouches included, and the unlisted leader with them: it stayed a
    pre-candidate for good (simulator, 5 nodes, seed 31095). The answer of a listed id at
    another incarnation is still refused (never a vote), but its vouch is noted: a vouch
    claims no durable state, and under such an id a forger could lead the leaderless member
    anyway. The vouched leader is heard at the vouch's term only; a made-up id still vouches
    for no one, and the vouched term is not the node's until the leader's traffic comes."""
    config = RaftConfig(unlisted_leaders=False)
    node = follower(config=config)
    for _ in range(config.election_ticks_max + 1):
        node.tick()  # its leader went quiet
    node.ready()
    replaced = attrs.evolve(vouch("n3", 5, "n9"), sender_incarnation="inc3.new")
    node.step(attrs.evolve(replaced, granted=True, leader=None))  # a grant: refused, no vote
    node.step(attrs.evolve(vouch("eve", 5, "mallory"), sender_incarnation="e.0"))
    node.step(replaced)
    s = node.status()
    assert (s.term, s.vote, s.leader) == (2, None, None)  # the answers moved nothing
    assert dict(s.refused) == {"incarnation": 2, "stranger": 1}
    node.step(Heartbeat(term=5, src="mallory", dst="n2", commit=2))
    node.step(Heartbeat(term=6, src="n9", dst="n2", commit=2))  # not the vouched term
    assert dict(node.status().refused) == {"incarnation": 2, "stranger": 3}
    node.step(Heartbeat(term=5, src="n9", dst="n2", commit=2))
    s = node.status()
    assert (s.term, s.leader) == (5, "n9")
    # With the vouch's term ours now, the rule is the old one: n9 alone leads us in term 5.
    node.step(Heartbeat(term=5, src="mallory", dst="n2", commit=2))
    assert dict(node.status().refused) == {"incarnation": 2, "stranger": 4}


def test_without_unlisted_leaders_a_learner_refusing_a_leader_probes_its_listed_members() -> None:
    """A learner never campaigns, so it never got the vouch a rejected pre-vote carries: one
    whose configuration predates its leader's addition refused that leader as a stranger for
    good (simulator, 7 nodes, seed 30041). Now a learner whose election timer runs out while
    it refuses leader traffic sends every other member it lists a pre-vote request (a probe);
    a listed member's rejection naming its leader is the vouch. Nothing else probes: with
    TLS (unlisted leaders on) the learner hears the leader; without refusals it stays quiet;
    a voter campaigns instead (its own pre-votes)."""
    learner_m = Membership(
        voters=frozenset({"n1", "n3"}),
        learners=frozenset({"n2"}),
        incarnations=(("n1", "inc1"), ("n2", "inc2"), ("n3", "inc3")),
    )
    config = RaftConfig(unlisted_leaders=False)
    node = follower(config=config, membership=learner_m)
    assert node.status().role is Role.LEARNER
    for _ in range(config.election_ticks_max + 1):
        node.tick()  # its leader went quiet: nothing refused yet, no probe
    assert not node.ready().messages
    node.step(Heartbeat(term=5, src="n9", dst="n2", commit=2))  # the new, unlisted leader
    assert dict(node.status().refused) == {"stranger": 1}
    node.tick()  # (its election timer ran out already)
    probes = [m for m in node.ready().messages if isinstance(m, RequestVote)]
    assert [(m.dst, m.term, m.pre_vote, m.last_log_index) for m in probes] == [
        ("n1", 3, True, 2),
        ("n3", 3, True, 2),
    ]
    assert node.status().term == 2 and node.status().vote is None  # a probe changes nothing
    # A grant is no vouch (and elects no one); n1 rejects naming n9 at term 5: the vouch.
    node.step(RequestVoteResponse(term=3, src="n1", dst="n2", granted=True, pre_vote=True))
    assert node.status().term == 2 and node.status().role is Role.LEARNER
    node.step(vouch("n1", 5, "n9"))
    node.step(Heartbeat(term=5, src="mallory", dst="n2", commit=2))  # still a stranger
    node.step(Heartbeat(term=5, src="n9", dst="n2", commit=2))
    s = node.status()
    assert (s.term, s.leader, s.role) == (5, "n9", Role.LEARNER)
    assert dict(s.refused) == {"stranger": 2}
    # The answer of a listed member that follows no one names no one: no vouch, no probe
    # storm (one round per election timeout while leaders are refused).
    quiet = follower(config=config, membership=learner_m)
    for _ in range(config.election_ticks_max + 1):
        quiet.tick()
    quiet.ready()
    quiet.step(Heartbeat(term=5, src="n9", dst="n2", commit=2))
    quiet.tick()
    assert len(quiet.ready().messages) == 2
    for _ in range(config.election_ticks_min - 1):
        quiet.tick()
    assert not quiet.ready().messages  # the next round only after a new timeout
    for _ in range(2 * config.election_ticks_max):
        quiet.tick()
    assert len(quiet.ready().messages) == 2  # and none once no leader was refused lately
    # With TLS the learner hears the leader at once, and never probes.
    tls = follower(config=RaftConfig(), membership=learner_m)
    for _ in range(config.election_ticks_max + 1):
        tls.tick()
    tls.step(Heartbeat(term=5, src="n9", dst="n2", commit=2))
    assert tls.status().leader == "n9"
    for _ in range(config.election_ticks_max + 1):
        tls.tick()
    assert not [m for m in tls.ready().messages if isinstance(m, RequestVote)]


def test_without_unlisted_leaders_an_in_lease_follower_rejects_a_pre_vote_naming_its_leader() -> (
    None
):
    """Without unlisted_leaders a follower in its lease answers a listed member's pre-vote
    with a rejection at its own term naming its leader (it used to stay silent, so a member
    that lagged behind the change adding that leader never learned whom to follow: 7 nodes,
    seed 7013); so do its other vote rejections. With TLS it stays silent and names no one.
    A made-up id's pre-vote is refused (no answer)."""
    pre = RequestVote(term=3, src="n3", dst="n2", last_log_index=2, last_log_term=2, pre_vote=True)
    node = follower(config=RaftConfig(unlisted_leaders=False))
    node.step(pre)
    assert list(node.ready().messages) == [
        RequestVoteResponse(term=2, src="n2", dst="n3", granted=False, pre_vote=True, leader="n1")
    ]
    assert node.status().term == 2 and node.status().vote is None  # nothing granted
    node.step(attrs.evolve(pre, src="mallory"))
    assert not node.ready().messages and node.status().refused == (("stranger", 1),)
    # A stale pre-vote and a vote the node cannot grant are rejected naming the leader too.
    node.step(attrs.evolve(pre, term=1))
    node.step(RequestVote(term=2, src="n3", dst="n2", last_log_index=1, last_log_term=1))
    answers = list(node.ready().messages)
    assert [(a.term, a.granted, a.pre_vote, a.leader) for a in answers] == [  # type: ignore[attr-defined]
        (2, False, True, "n1"),
        (2, False, False, "n1"),
    ]
    tls = follower()
    tls.step(pre)
    assert not tls.ready().messages  # with TLS: silent in the lease, as before
    tls.step(attrs.evolve(pre, term=1))
    assert [a.leader for a in tls.ready().messages] == [None]  # type: ignore[attr-defined]


# ---- snapshots and entries a member cannot take -----------------------------------------------


def test_an_oversized_snapshot_is_refused_before_anything_is_held() -> None:
    node = follower(config=RaftConfig(max_snapshot_bytes=64))
    before = node.status()
    part = forged_snapshot("n1", b"x" * 32, total=128)
    node.step(attrs.evolve(part, done=False, term=2, sender_incarnation="inc1"))
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
    garbage = attrs.evolve(
        forged_snapshot("n1", b"\xa1\x61a\x01"), term=2, sender_incarnation="inc1"
    )
    node.step(garbage)
    rd = node.ready()
    after = node.status()
    assert rd.snapshot is None  # nothing to store, nothing to restore
    assert view(after) == view(before) and after.refused == (("snapshot_data", 1),)
    assert checked == [b"\xa1\x61a\x01"]
    good = attrs.evolve(forged_snapshot("n1", b"good"), term=2, sender_incarnation="inc1")
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
