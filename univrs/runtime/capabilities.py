"""What the members announced in their hellos: the gates on batch entries and on lease reads.

Lease reads (s14-audit L1) are at the end of this docstring.

A batch entry (payload version 2, univrs/runtime/payload.py) must never reach a node that
cannot apply it: such a node would answer it with an error and change nothing while the
others apply its commands (older code), or stop (this code, for any version newer than it
knows). So the leader packs batch entries only while **every member of its configuration**
has announced that it applies version 2: the voters and the learners of the newest
(appended) configuration and of the applied one, a member being added included from the
moment its configuration entry is appended (a configuration takes effect when appended).

Each node announces the newest payload version it applies in the hello of every raft
connection it dials (``Hello.payload``, univrs/net/hello.py; absent in an older node's hello,
which counts as version 1). The transport keeps, per peer, the newest hello's announcement and
the incarnation that hello named (``RaftTransport.peer_payload_versions``). An announcement
counts for a member only if it came from the incarnation the configuration binds to that id
(any, while the id is unbound): a new data dir under an old id must announce again.

The rule is evaluated by the leader before each ``propose_many`` (``batch_gate``), from what
it holds now: nothing about it is stored, so it holds the same after a restart or a leader
change (a new leader packs once it has heard every member's hello: within a redial, since
every member dials every other). A member that restarts with older code announces version 1
(or nothing) and closes the gate at its next hello; entries packed before that are in its log
already, and this code stops on them rather than misapply them (payload.py). etcd gates its
features on a *cluster version* replicated through the log, which never goes down and
refuses older members; this gate is per leader and re-derived, which keeps a rolling
downgrade of a node that never received a batch entry possible (docs/runtime.md).

Payload version 3 (s14-owner: envelopes carrying their caller's identity, checked by the state
machine against the session's owner) is gated by the same rule at version 3 (``OwnerGate``),
evaluated by the driver before it appends proposals that carry an owner (batching.py
``flush``, with the core's newest configuration, as for packing): while it is closed the leader
drops the owners and writes the commands as before (versions 1 and 2), so a member of older
code never sees an owner it would refuse as an unknown key while the others apply the command.
Encoding happens in the proposers' tasks, with the owner; only while the gate is closed is a
proposal encoded again, without it.

**Lease reads.** A leader's read lease (univrs/raft/read_only.py, "Leases") rests on every
voter refusing votes for ``election_ticks_min`` of *its own* ticks after it heard from a leader,
by the read-lease rule (election.py ``_in_lease``: also after a restart, whatever cleared its
leader). ``[raft] read_lease`` and the timings are per node: a member with leases off grants
votes by the ordinary rule (at once after a restart), one with a shorter election timeout or
tick refuses for less time than the leader's lease counts on, and a new leader can commit a
write while the old one still answers lease reads without it (a stale read;
tests/raft/test_raft_audit3_lease_mix.py shows both at the core). So each node announces its
*hold* in every hello (``Hello.hold``: ``lease_hold_ms``, 0 with leases off), the transport
keeps the hold of each open inbound connection (``RaftTransport.peer_lease_holds``), and the
leader confirms a lease read by its lease only while every member of its newest and applied
configurations (any of them may vote in the next election: a configuration is one change
from the other) announced, from the incarnation the configuration binds, a hold at least its
own (``lease_gate``: the lease plus the drift bound, ``(election_ticks_min - 1)`` ticks);
otherwise the read is an ordinary ReadIndex read: slower, never stale. A gate closed for a
member not heard yet (a leader just elected, a learner just added) opens at its next hello.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import attrs

from univrs.raft import Membership, RaftConfig
from univrs.runtime.payload import BATCH_VERSION, OWNER_VERSION

log = logging.getLogger("univrs.node")

# Peer id -> (the incarnation its newest hello named, or None; the payload version it announced).
Announced = Mapping[str, tuple[str | None, int]]


def batch_gate(
    own_id: str,
    configurations: Iterable[Membership],
    announced: Announced,
    version: int = BATCH_VERSION,
) -> str | None:
    """None if every member of ``configurations`` (other than ``own_id``, which runs this
    code) announced payload ``version`` (2: batch entries) from the incarnation the
    configuration binds to it; else the first member that did not, with why (for the log
    line)."""
    for m in configurations:
        for nid in sorted(m.members):
            if nid == own_id:
                continue
            heard = announced.get(nid)
            if heard is None:
                return f"{nid} has not announced the payload versions it applies"
            incarnation = heard[0]
            bound = m.incarnation_of(nid)
            if bound is not None and incarnation != bound:
                return f"{nid} has not announced the payload versions it applies as {bound}"
            if heard[1] < version:
                return f"{nid} applies payload version {heard[1]} at most"
    return None


def no_announcements() -> Announced:
    """The default source of announcements: none heard, so no batch entries."""
    return {}


@attrs.define(eq=False)
class _Said:
    """What a gate last logged of its answer (a reason it is closed, or None: open), so that
    each change is logged once: ``opened`` at INFO, ``closed`` (with the reason) at
    ``closed_level``."""

    opened: str
    closed: str
    closed_level: int = logging.INFO
    last: str | None = attrs.field(default="not yet evaluated", init=False)

    def __call__(self, gate: str | None) -> bool:
        """Log ``gate`` if it changed; True if the gate is open."""
        if gate != self.last:
            if gate is None:
                log.info(self.opened)
            else:
                log.log(self.closed_level, self.closed, extra={"reason": gate})
            self.last = gate
        return gate is None


@attrs.define(eq=False)
class BatchGate:
    """The leader's question before each ``propose_many``: may these ``n`` proposals go in
    batch entries? Only if packing is on, there are several, and every member announced it
    applies them (``batch_gate``). A change of the answer is logged once."""

    own_id: str
    enabled: bool
    max_payload_version: int
    # The configurations that must all apply batch entries (the core's newest, the applied).
    configurations: Callable[[], tuple[Membership, Membership]]
    announced: Callable[[], Announced]
    _said: _Said = attrs.field(
        factory=lambda: _Said(
            "batch entries on: every member applies them", "batch entries paused"
        ),
        init=False,
    )

    def __call__(self, n: int) -> bool:
        if not self.enabled or n < 2 or self.max_payload_version < BATCH_VERSION:
            return False
        return self._said(batch_gate(self.own_id, self.configurations(), self.announced()))


@attrs.define(eq=False)
class OwnerGate:
    """May a command carry its owner (payload version 3, s14-owner)? Only while this node
    applies version 3 and every member announced it (``batch_gate`` at version 3). A change of
    the answer is logged once."""

    own_id: str
    max_payload_version: int
    configurations: Callable[[], tuple[Membership, Membership]]
    announced: Callable[[], Announced]
    _said: _Said = attrs.field(
        factory=lambda: _Said(
            "session owners in entries on: every member applies them",
            "session owners in entries paused",
        ),
        init=False,
    )

    def __call__(self) -> bool:
        if self.max_payload_version < OWNER_VERSION:
            return False
        announced = self.announced()
        return self._said(batch_gate(self.own_id, self.configurations(), announced, OWNER_VERSION))


def lease_hold_ms(config: RaftConfig, tick_ms: int) -> int:
    """How long at least a node of ``config`` refuses votes after it last heard from a leader
    (``Hello.hold``): ``election_ticks_min`` of its ticks from the tick it heard in, so at
    least ``election_ticks_min - 1`` whole ticks; 0 without read leases (the ordinary rule)."""
    if not config.read_lease:
        return 0
    return (config.election_ticks_min - 1) * tick_ms


def lease_gate(
    own_id: str, configurations: Iterable[Membership], holds: Announced, need_ms: int
) -> str | None:
    """None if every member of ``configurations`` (but ``own_id``) announced a vote hold of at
    least ``need_ms`` (the leader's own ``lease_hold_ms``: its lease and drift bound) from the
    incarnation the configuration binds (any, while unbound); else the first that did not."""
    if need_ms <= 0:
        return "read leases are off here"
    for m in configurations:
        for nid in sorted(m.members):
            if nid == own_id:
                continue
            heard = holds.get(nid)
            if heard is None:
                return f"{nid} has not announced its vote hold (no hello on an open connection)"
            incarnation, hold = heard
            bound = m.incarnation_of(nid)
            if bound is not None and incarnation != bound:
                return f"{nid} has not announced its vote hold as {bound}"
            if hold < need_ms:
                return (
                    f"{nid} refuses votes for {hold} ms after hearing a leader, less than the "
                    f"{need_ms} ms this node's lease counts on (read_lease or the election "
                    "timeout set differently there)"
                )
    return None


@attrs.define(eq=False)
class LeaseGate:
    """The leader's question before a lease read: may its lease confirm it (``lease_gate``)?
    ``holds`` None: not checked (in-process test clusters, whose members share one
    configuration). A change of the answer is logged once (WARNING when it closes)."""

    own_id: str
    need_ms: int
    configurations: Callable[[], tuple[Membership, Membership]]
    holds: Callable[[], Announced] | None
    closed: int = attrs.field(default=0, init=False)  # lease reads sent as ReadIndex reads
    _said: _Said = attrs.field(
        factory=lambda: _Said(
            "lease reads on: every member refuses votes long enough",
            "lease reads served as linearizable reads",
            logging.WARNING,
        ),
        init=False,
    )

    def __call__(self) -> bool:
        if self.holds is None:
            return True
        gate = lease_gate(self.own_id, self.configurations(), self.holds(), self.need_ms)
        if not self._said(gate):
            self.closed += 1
            return False
        return True
