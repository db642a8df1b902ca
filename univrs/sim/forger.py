"""The forger: an attacker on the simulated network who speaks the protocol (issue 12).

It knows what anyone sniffing the network knows (each node's term and log position, who
leads) and sends forged messages the cores must refuse by the membership rule for senders
(univrs/raft/senders.py):

* an AppendEntries from a made-up peer id ("mallory") that appends and commits a no-op one
  term ahead;
* an InstallSnapshot from that made-up peer carrying an empty state past the node's commit
  index;
* an AppendEntries that names the node's real leader as its sender, at the leader's term,
  from an incarnation the configuration does not bind to that id (the runtime attests it:
  ``Message.sender_incarnation``), or with no incarnation attested (what the runtime's
  transport attests for a hello naming none while the configuration binds the leader to no
  incarnation yet: the red team's window, where only the incarnation the node hears its live
  leader at tells the forgery apart);
* a vote request (a pre-vote or a real one, sometimes marked as a leader transfer, which
  passes the CheckQuorum lease) from the made-up peer, one term ahead with a log as up to date
  as the node's;
* to a candidate or pre-candidate: a granted vote answer of its term under the id of a voter
  of its configuration, from an incarnation the configuration does not bind to that id (a
  wiped member's new data dir would send that), or from the made-up peer; under the id of
  a voter the configuration binds to no incarnation yet (``Simulation(unbound_bootstrap=
  True)``) once the core pinned that voter's own incarnation (``Status.pinned``), or its
  data dir ever made such a pin durable (a restarted core must still hold it: the
  ``forget-pins-at-restart`` mutant does not);
* to a leader, right after it took an answer from such a pinned, unbound member: a
  successful AppendEntriesResponse for its whole log under that member's id from another
  incarnation;
* to a candidate or pre-candidate (a node that follows no leader, which takes vote requests
  from any sender): a vote request from the made-up peer at a term no honest one carries
  (``MAX_TERM``, just under it, or just past ``MAX_TERM_STEP`` above the node's: s15-review
  T1, where one such request left a cluster with no term to elect a leader in). Drawn from an
  RNG of its own (``term_rng``), so the other forgeries of a seed are the ones they were.

The first four are handed to the core at once (never through the network model, whose
transport would refuse a wrong incarnation before the core sees it), right after the node
heard from its leader, i.e. while it follows a live leader and its configuration lists it: the
situation in which every member of a healthy cluster is, and in which the rule refuses them
all; the forged answers, on a tick of a campaigning node, where the rule refuses every vote
answer from a stranger. A core that accepted them would commit or install what no leader
proposed, adopt a stranger's term and depose a working leader, or win an election without a
majority. The simulator checks each forgery at once (invariant ``forgery-refused``: the core
counts it refused and its term, vote, role, leader, log and commit are unchanged); the
``accept-strangers``, ``stranger-votes-while-led``, ``stranger-vote-answers``,
``live-leader-any-incarnation``, ``unbound-any-incarnation`` and ``no-term-step`` mutants show
it catches each rule's absence.

The forger draws from its own RNG, so a seed's faults and workload are the same with it or
without it, and a correct core is not changed at all by what it refuses.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping

import attrs

from univrs.raft.gate import MAX_TERM, MAX_TERM_STEP
from univrs.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
)
from univrs.raft.node import RaftNode
from univrs.raft.ready import Role
from univrs.sim.kv import KvStore

MALLORY = "mallory"
"""The made-up peer id the forger sends as (no node of the simulation has it)."""

FORGED_INCARNATION = "forged.0"
"""The incarnation the forger's messages under a real id are attested with."""


@attrs.define(eq=False)
class Forger:
    """Forges a message with probability ``rate`` each time a node hears from its leader."""

    rng: random.Random
    rate: float = 0.002
    answer_rate: float = 0.02  # per tick of a campaigning node
    ack_rate: float = 0.01  # per answer a leader takes from a pinned unbound member
    term_rate: float = 0.02  # per tick of a campaigning node: a vote request at a forged term
    term_rng: random.Random | None = None  # its own draws (None: from ``rng``'s seed, once)
    sent: int = 0  # forged messages handed to cores (the simulator counts them)
    refused: int = 0  # of which the core refused (the simulator counts them)

    def maybe_forge(self, raft: RaftNode, heard: Message) -> Message | None:
        """A forged message for ``raft``, which just stepped ``heard`` from its leader, or None."""
        if self.rng.random() >= self.rate:
            return None
        st = raft.status()
        if st.role is Role.LEADER or st.leader != heard.src or st.term != heard.term:
            return None  # (a message of its term from its leader reset its election timer)
        if st.id not in st.membership.voters and st.id not in st.membership.learners:
            return None
        kind = self.rng.randrange(4)
        last, last_term = st.last_index, st.last_term
        if kind == 3:
            return RequestVote(
                term=st.term + 1,
                src=MALLORY,
                dst=st.id,
                last_log_index=last,
                last_log_term=last_term,
                pre_vote=self.rng.random() < 0.5,
                transfer=self.rng.random() < 0.5,
            )
        if kind == 0:
            term = st.term + 1
            noop = Entry(term=term, index=last + 1, kind=EntryKind.NOOP)
            return AppendEntries(
                term=term,
                src=MALLORY,
                dst=st.id,
                prev_log_index=last,
                prev_log_term=last_term,
                entries=(noop,),
                commit=last + 1,
            )
        if kind == 1:
            data = KvStore().snapshot()
            meta = SnapshotMeta(index=st.commit + 50, term=st.term + 1, membership=st.membership)
            return InstallSnapshot(
                term=st.term + 1,
                src=MALLORY,
                dst=st.id,
                meta=meta,
                offset=0,
                data=data,
                done=True,
                total_size=len(data),
                checksum=zlib.crc32(data),
            )
        m = st.membership
        if heard.src not in m.voters | m.learners:
            return None  # an unlisted leader: no incarnation to be wrong about
        incarnation: str | None = FORGED_INCARNATION
        if m.incarnation_of(heard.src) is not None and self.rng.random() < 0.5:
            # Nothing attested, as the runtime's transport attests a hello that names no
            # incarnation while the listing binds none: the configuration cannot tell, only
            # the incarnation the node hears its leader at can (senders.py).
            incarnation = None
        noop = Entry(term=st.term, index=last + 1, kind=EntryKind.NOOP)
        return AppendEntries(
            term=st.term,
            src=heard.src,
            dst=st.id,
            prev_log_index=last,
            prev_log_term=last_term,
            entries=(noop,),
            commit=last + 1,
            sender_incarnation=incarnation,
        )

    def maybe_forge_answer(
        self, raft: RaftNode, durable_pins: Mapping[str, str] | None = None
    ) -> Message | None:
        """A forged granted vote answer for ``raft`` if it campaigns (called once per tick),
        or None: under the id of a voter of its configuration from an incarnation the
        configuration does not bind to it, or from the made-up peer. ``durable_pins``: the
        pins ``raft``'s data dir ever made durable (disk.py ``pins_ever``), which it holds to
        after a restart as well.

        The status (about a tenth of a seed's time when built every tick) only once a forgery
        is drawn: the role is one field, and building the status draws nothing, so the RNG's
        draws and every seed's course are unchanged."""
        if raft.role() not in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            return None
        if self.rng.random() >= self.answer_rate:
            return None
        st = raft.status()
        m = st.membership
        pre = st.role is Role.PRE_CANDIDATE
        # Voters it binds, and voters it binds to none yet but the core pinned (it took a
        # message from the member's own incarnation: gate.py ``_maybe_pin``).
        pinned = dict(st.pinned)
        if durable_pins:
            pinned.update(durable_pins)
        voters = sorted(
            v for v in m.voters if v != st.id and (m.incarnation_of(v) is not None or v in pinned)
        )
        if voters and self.rng.random() < 0.75:
            src, incarnation = self.rng.choice(voters), FORGED_INCARNATION
        else:
            src, incarnation = MALLORY, None
        return RequestVoteResponse(
            # A pre-candidate's requests carry the term it would campaign in (9.6).
            term=st.term + 1 if pre else st.term,
            src=src,
            dst=st.id,
            granted=True,
            pre_vote=pre,
            sender_incarnation=incarnation,
        )

    def maybe_forge_term(self, raft: RaftNode) -> Message | None:
        """A vote request at a term no honest node sends, for ``raft`` if it campaigns (called
        once per tick), or None: from the made-up peer, at ``MAX_TERM``, just under it, or
        just more than ``MAX_TERM_STEP`` above the node's term, with a log ahead of its own."""
        if raft.role() not in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            return None
        rng = self.term_rng
        if rng is None:  # seeded from ``rng``'s state, without drawing from it
            rng = self.term_rng = random.Random(repr(self.rng.getstate()[1][:4]))
        if rng.random() >= self.term_rate:
            return None
        st = raft.status()
        term = rng.choice([MAX_TERM, MAX_TERM - 1, st.term + MAX_TERM_STEP + 1])
        return RequestVote(
            term=term,
            src=MALLORY,
            dst=st.id,
            last_log_index=st.last_index + 1000,
            last_log_term=st.last_term,
        )

    def maybe_forge_ack(self, raft: RaftNode, heard: Message) -> Message | None:
        """A forged acknowledgement for ``raft``, a leader that just took ``heard`` (an answer
        from a member its configuration binds to no incarnation yet, so pinned: gate.py
        ``_maybe_pin``), or None: a successful AppendEntriesResponse of its term for its whole
        log under that member's id from another incarnation (a forger's, or the member's
        wiped data dir's). Counted, it could commit what the member never received.

        Called for every answer a node takes: the pin is looked up first, and the status
        (about a tenth of a seed's time when built for every answer) only for a pinned
        sender. The checks draw nothing, so their order leaves the RNG's draws unchanged."""
        if raft.pinned_incarnation(heard.src) is None:
            return None  # not pinned (most seeds bind every member: no pins at all)
        st = raft.status()
        if st.role is not Role.LEADER or heard.term != st.term:
            return None
        if st.membership.incarnation_of(heard.src) is not None:
            return None  # bound: the transport and the configuration refuse another
        if self.rng.random() >= self.ack_rate:
            return None
        return AppendEntriesResponse(
            term=st.term,
            src=heard.src,
            dst=st.id,
            success=True,
            index=st.last_index,
            sender_incarnation=FORGED_INCARNATION,
        )
