"""s15-review T1: a stranger's vote request cannot push a leaderless member to the last term.

Without TLS a node that follows no live leader takes vote requests from any sender (the
election's own rules judge them; docs/security.md, "Core refusals"), and with them their term.
``MAX_TERM`` (2^62) kept terms from reaching the top of the 64-bit range, but a term *at* the
bound was taken: one RequestVote at ``MAX_TERM`` from a made-up id, sent to every member while
they were between leaders, put them all at the bound, where every election's next term is
refused by every member (``term``). The cluster never elected a leader again, durably (the
term is hard state), on a real plaintext cluster of 4 processes restarted afterwards too. A
message whose term is more than ``MAX_TERM_STEP`` above the node's own is now refused.
"""

from __future__ import annotations

import pytest
from harness import Cluster

from univrs.raft import MAX_TERM
from univrs.raft.gate import MAX_TERM_STEP
from univrs.raft.messages import RequestVote


def _leaderless_pair() -> Cluster:
    """n1 led and crashed; n2 and n3 have timed out and follow no one (nothing delivered)."""
    c = Cluster.bootstrap(["n1", "n2", "n3"])
    c.elect("n1")
    c.tick_all(2, deliver=True)
    c.crash("n1")
    c.network.clear()
    for nid in ("n2", "n3"):
        c.tick(nid, 2 * c.config.election_ticks_max)
        assert c.status(nid).leader is None
    return c


@pytest.mark.parametrize("term", [MAX_TERM, MAX_TERM - 1, 1 << 40])
def test_a_strangers_vote_request_far_ahead_is_refused_and_elections_go_on(term: int) -> None:
    c = _leaderless_pair()
    before = {nid: c.status(nid).term for nid in ("n2", "n3")}
    for nid in ("n2", "n3"):
        c.nodes[nid].step(
            RequestVote(
                term=term,
                src="mallory",
                dst=nid,
                last_log_index=1 << 40,
                last_log_term=1,
                sender_incarnation="feedface",
            )
        )
        c.process(nid)
        assert c.status(nid).term == before[nid]
        assert dict(c.status(nid).refused).get("term") == 1
    for _ in range(50):
        c.tick_all(1, deliver=True)
        if c.leader() is not None:
            break
    leader = c.leader()
    assert leader in ("n2", "n3")
    assert c.status(leader).term < max(before.values()) + 10
    c.propose(leader, b"after")
    c.tick_all(2, deliver=True)
    assert c.applied_data("n2")[-1:] == [b"after"]


def test_a_term_within_the_step_is_still_taken() -> None:
    """Honest terms move by elections, one at a time: a member that missed many of them (far
    fewer than ``MAX_TERM_STEP``) still hears the term of the cluster it comes back to."""
    c = _leaderless_pair()
    st = c.status("n2")
    term = st.term + MAX_TERM_STEP
    vote = RequestVote(
        term=term, src="n3", dst="n2", last_log_index=st.last_index, last_log_term=st.last_term
    )
    c.nodes["n2"].step(vote)
    c.process("n2")
    assert c.status("n2").term == term
