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
  ``Message.sender_incarnation``).

Each is handed to the core at once (never through the network model, whose transport would
refuse a wrong incarnation before the core sees it), right after the node heard from its
leader, i.e. while it follows a live leader and its configuration lists it: the situation in
which every member of a healthy cluster is, and in which the rule refuses all three. A core
that accepted them would commit or install what no leader proposed, and the checker's State
Machine Safety or snapshot checks catch it (the ``AcceptStrangers`` mutant shows they do).

The forger draws from its own RNG, so a seed's faults and workload are the same with it or
without it, and a correct core is not changed at all by what it refuses.
"""

from __future__ import annotations

import random
import zlib

import attrs

from univrs.raft.messages import (
    AppendEntries,
    Entry,
    EntryKind,
    InstallSnapshot,
    Message,
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
    sent: int = 0  # forged messages handed to cores
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
        self.sent += 1
        kind = self.rng.randrange(3)
        last, last_term = st.last_index, st.last_term
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
        bound = m.incarnation_of(heard.src)
        if bound is None or heard.src not in m.voters | m.learners:
            return None  # an unbound (or unlisted) leader: no incarnation to be wrong about
        noop = Entry(term=st.term, index=last + 1, kind=EntryKind.NOOP)
        return AppendEntries(
            term=st.term,
            src=heard.src,
            dst=st.id,
            prev_log_index=last,
            prev_log_term=last_term,
            entries=(noop,),
            commit=last + 1,
            sender_incarnation=FORGED_INCARNATION,
        )
