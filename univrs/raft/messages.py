"""Values the Raft core exchanges with the outside: log entries, hard state, membership, messages.

Everything here is an immutable attrs value. The wire codec (``univrs.codec``) maps each message
class to a CBOR form through one table; nothing here knows about bytes on a wire.

Names follow the Raft paper (Ongaro & Ousterhout 2014, Figure 2) and the dissertation (Ongaro
2014): ``RequestVote`` also carries PreVote (dissertation 9.6), ``Heartbeat`` is a log-free
AppendEntries that also carries the ReadIndex round id (dissertation 6.4), ``TimeoutNow`` starts a
leader transfer (dissertation 3.10).
"""

from __future__ import annotations

import enum
import json

import attrs

NodeId = str


class EntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0  # an opaque state-machine command (bytes encoded by univrs.sm)
    NOOP = 1  # appended by every new leader at the start of its term (paper 5.4.2, 8)
    CONFIG = 2  # a new Membership, JSON-encoded by encode_membership; effective when appended


@attrs.frozen(kw_only=True, slots=True)
class Entry:
    """One log entry. Invariant: ``index >= 1`` and ``term >= 1``."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@attrs.frozen(kw_only=True, slots=True)
class HardState:
    """What must be durable before the node answers anyone: current term, vote, commit index,
    and the pins (univrs/raft/gate.py ``_maybe_pin``).

    ``pins``: sorted pairs (member id, incarnation), the incarnation this data dir first took a
    message from under each member id a configuration listed without binding it (a bootstrap
    configuration, until the leader's binding change). Only ever grows: a hard state written
    later holds every pin of an earlier one. Durable like the vote, so that a restart does not
    take another incarnation under such an id (a wiped member's, a forger's) as the member.

    ``named``: sorted member ids that a configuration of this data dir's log named and that
    compaction or a snapshot's install has folded away since (univrs/raft/membership.py
    ``ConfigHistory.named``). Only ever grows. Without TLS a stale member hears the candidate
    it voted for only if its log's configurations named that id (gate.py ``_once_listed``):
    this keeps the answer about the log's history, not about when it was compacted. Losing it
    (a crash before it is written, a build that ignores it) narrows whom the node hears, never
    widens it.
    """

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0
    pins: tuple[tuple[NodeId, str], ...] = ()
    named: tuple[NodeId, ...] = ()


def _ids_repr(ids: frozenset[NodeId]) -> str:
    """A set of ids as ``repr`` writes it, in id order: not in the set's hash order, which
    changes with the process's string hashing (a simulator trace must read the same in a
    replay in another process)."""
    return f"frozenset({{{', '.join(map(repr, sorted(ids)))}}})" if ids else "frozenset()"


@attrs.frozen(kw_only=True, slots=True)
class Membership:
    """A cluster configuration: voters decide elections and commit; learners only receive the log.

    ``addresses`` rides along so every node learns how to reach every member (sorted pairs of
    node id and raft address); ``api_addresses`` likewise names each member's client API
    address where known. The core itself never reads addresses.

    ``incarnations`` binds a member id to the incarnation of its data dir (sorted pairs; a
    random id chosen when the data dir was created). A member is an id *and* an incarnation: a
    node whose data dir was wiped comes back with a new incarnation and is a stranger to this
    configuration until an operator replaces the old one. A member with no entry here is
    unbound (a bootstrap member whose incarnation the leader has not yet recorded). The core
    resets a member's replication progress when its incarnation changes; the transport refuses
    a peer whose incarnation differs from the one listed.
    Invariant: voters and learners are disjoint.
    """

    voters: frozenset[NodeId] = attrs.field(repr=_ids_repr)
    learners: frozenset[NodeId] = attrs.field(default=frozenset(), repr=_ids_repr)
    addresses: tuple[tuple[NodeId, str], ...] = ()
    api_addresses: tuple[tuple[NodeId, str], ...] = ()
    incarnations: tuple[tuple[NodeId, str], ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.voters & self.learners:
            raise ValueError(f"voters and learners overlap: {sorted(self.voters & self.learners)}")

    @property
    def members(self) -> frozenset[NodeId]:
        return self.voters | self.learners

    def address_of(self, node_id: NodeId) -> str | None:
        """The raft address of a member, if known."""
        return dict(self.addresses).get(node_id)

    def api_address_of(self, node_id: NodeId) -> str | None:
        """The client API address of a member, if known."""
        return dict(self.api_addresses).get(node_id)

    def incarnation_of(self, node_id: NodeId) -> str | None:
        """The incarnation this configuration binds ``node_id`` to (None: unbound)."""
        for nid, inc in self.incarnations:
            if nid == node_id:
                return inc
        return None


def encode_membership(m: Membership) -> bytes:
    """Stable bytes for a CONFIG entry (JSON, sorted, so every replica writes the same bytes)."""
    doc = {
        "voters": sorted(m.voters),
        "learners": sorted(m.learners),
        "addresses": sorted([list(p) for p in m.addresses]),
        "api_addresses": sorted([list(p) for p in m.api_addresses]),
    }
    if m.incarnations:  # absent when empty: configurations written before incarnations decode
        doc["incarnations"] = sorted([list(p) for p in m.incarnations])
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode_membership(data: bytes) -> Membership:
    """Inverse of encode_membership. Raises ValueError on malformed data."""
    doc = json.loads(data)
    return Membership(
        voters=frozenset(doc["voters"]),
        learners=frozenset(doc["learners"]),
        addresses=tuple((str(a), str(b)) for a, b in doc.get("addresses", [])),
        api_addresses=tuple((str(a), str(b)) for a, b in doc.get("api_addresses", [])),
        incarnations=tuple((str(a), str(b)) for a, b in doc.get("incarnations", [])),
    )


@attrs.frozen(kw_only=True, slots=True)
class SnapshotMeta:
    """Describes a snapshot: the last log position it includes and the membership at that point."""

    index: int
    term: int
    membership: Membership


# --------------------------------------------------------------------------------------------
# Messages between nodes. Every message carries the sender's term, its source and destination.
# --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True, slots=True)
class Message:
    """Common fields of every Raft message.

    ``sender_incarnation`` is not on the wire: the receiving runtime fills it in with the
    incarnation its transport attests for the sender (the one the connection's hello named;
    None: nothing attested), and the core refuses a message whose sender's id the
    configuration binds to another incarnation (univrs/raft/senders.py). It takes no part in
    equality or repr.
    """

    term: int
    src: NodeId
    dst: NodeId
    sender_incarnation: str | None = attrs.field(
        default=None, eq=False, repr=False, metadata={"wire": False}
    )


@attrs.frozen(kw_only=True, slots=True)
class RequestVote(Message):
    """Ask for a vote (or, with ``pre_vote``, whether a vote would be granted; 9.6).

    For a pre-vote, ``term`` is the term the candidate *would* campaign in; receivers do not
    change their own term. ``transfer`` marks a campaign started by TimeoutNow, which voters
    grant even while they believe a leader is alive.
    """

    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@attrs.frozen(kw_only=True, slots=True)
class RequestVoteResponse(Message):
    """Answer to RequestVote (``pre_vote`` echoes the request).

    ``leader``: on a rejection, the leader the sender follows in its term ``term`` (a hint,
    set only without ``RaftConfig.unlisted_leaders``; None otherwise). A member in its own
    configuration that runs without ``unlisted_leaders`` takes leader traffic from an id its
    configuration does not list only when a member it lists vouched for that id this way in
    that term (univrs/raft/senders.py). A hint never grants anything.
    """

    granted: bool
    pre_vote: bool = False
    leader: NodeId | None = None


@attrs.frozen(kw_only=True, slots=True)
class AppendEntries(Message):
    """Replicate ``entries`` after (prev_log_index, prev_log_term); ``commit`` is the leader's."""

    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    commit: int


@attrs.frozen(kw_only=True, slots=True)
class AppendEntriesResponse(Message):
    """Answer to AppendEntries.

    On success ``index`` is the last index the follower now matches (sent only after those
    entries are durable on the follower). On rejection ``index`` is the rejected
    prev_log_index and (hint_index, hint_term) is the fast-backtracking hint: the follower's
    last index if its log is shorter (hint_term 0), otherwise the first index of the conflicting
    term (hint_term that term).
    """

    success: bool
    index: int
    hint_index: int = 0
    hint_term: int = 0


COMMIT_NOTICE_CTX = (1 << 64) - 1
"""``Heartbeat.ctx`` of a lazy commit notice (univrs/raft/commit_notice.py
``_commit_notice_ctx``): it only tells a follower the commit index, and the follower takes it
without answering (the leader learns nothing from the answer that the follower's
AppendEntriesResponse did not tell it, and periodic heartbeats are still answered: CheckQuorum
and the pipelines' unsticking rely on those). No ReadIndex
round reaches it (rounds count up from 1 per leadership), and it is a valid ``uint`` on the
wire: an older follower answers it, and the leader's read rounds ignore an answer above the
newest round they handed out (read_only.py ``LeaderReads.ack``)."""


@attrs.frozen(kw_only=True, slots=True)
class Heartbeat(Message):
    """Leader liveness without log data. ``commit`` is min(leader commit, follower match).

    ``ctx`` is the ReadIndex round this heartbeat confirms (0 when none), or
    ``COMMIT_NOTICE_CTX`` for a commit notice, which the follower does not answer.
    """

    commit: int
    ctx: int = 0


@attrs.frozen(kw_only=True, slots=True)
class HeartbeatResponse(Message):
    """Answer to Heartbeat, echoing its ``ctx``."""

    ctx: int = 0


@attrs.frozen(kw_only=True, slots=True)
class TimeoutNow(Message):
    """Leader transfer: the receiver campaigns at once, bypassing PreVote and leases."""


@attrs.frozen(kw_only=True, slots=True)
class ReadIndexRequest(Message):
    """A follower asks the leader for a read index on behalf of its local read ``ctx``."""

    ctx: int


@attrs.frozen(kw_only=True, slots=True)
class ReadIndexResponse(Message):
    """The leader's answer: serve read ``ctx`` once applied >= ``index`` (``ok`` false: retry)."""

    ctx: int
    index: int
    ok: bool


@attrs.frozen(kw_only=True, slots=True)
class InstallSnapshot(Message):
    """One chunk of a snapshot stream (dissertation 5.3). Used from the compaction issue on.

    ``checksum`` covers the whole snapshot (all chunks), ``total_size`` its length in bytes.
    """

    meta: SnapshotMeta
    offset: int
    data: bytes
    done: bool
    total_size: int
    checksum: int


@attrs.frozen(kw_only=True, slots=True)
class InstallSnapshotResponse(Message):
    """Acknowledges snapshot bytes up to ``offset``; ``success`` false asks to restart at it."""

    snapshot_index: int
    offset: int
    success: bool


MESSAGE_TYPES: tuple[type[Message], ...] = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
)
