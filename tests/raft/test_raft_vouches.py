"""Plaintext mode (``unlisted_leaders`` off): a member hears a leader its configuration does not
list only when a listed member vouches for it; who may vouch, and how a learner asks for one."""

from __future__ import annotations

import attrs
from senders_helpers import M, follower, forged_append, forged_snapshot, hb, rule, view

from univrs.raft import (
    Heartbeat,
    Membership,
    Message,
    RaftConfig,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from univrs.raft.senders import sender_refusal


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
    node.step(attrs.evolve(pre, term=1, last_log_term=1))  # (no log of a later term than 1)
    node.step(RequestVote(term=2, src="n3", dst="n2", last_log_index=1, last_log_term=1))
    answers = list(node.ready().messages)
    assert [(a.term, a.granted, a.pre_vote, a.leader) for a in answers] == [  # type: ignore[attr-defined]
        (2, False, True, "n1"),
        (2, False, False, "n1"),
    ]
    tls = follower()
    tls.step(pre)
    assert not tls.ready().messages  # with TLS: silent in the lease, as before
    tls.step(attrs.evolve(pre, term=1, last_log_term=1))
    assert [a.leader for a in tls.ready().messages] == [None]  # type: ignore[attr-defined]
