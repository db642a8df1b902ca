"""The sans-IO Raft core: a pure, deterministic state machine fed events, handing back Ready.

See docs/core-api.md for the API and univrs/raft/ready.py for the Ready ordering contract.
"""

from univrs.raft.membership import bootstrap_state
from univrs.raft.messages import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Membership,
    Message,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
    decode_membership,
    encode_membership,
)
from univrs.raft.node import MAX_TERM, RaftNode
from univrs.raft.ready import (
    InitialState,
    PeerStatus,
    RaftConfig,
    ReadState,
    Ready,
    Role,
    SnapshotInstall,
    SoftState,
    Status,
)
from univrs.raft.rng import Rng

__all__ = [
    "MAX_TERM",
    "MESSAGE_TYPES",
    "AppendEntries",
    "AppendEntriesResponse",
    "Entry",
    "EntryKind",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InitialState",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "Membership",
    "Message",
    "NodeId",
    "PeerStatus",
    "RaftConfig",
    "RaftNode",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "ReadState",
    "Ready",
    "RequestVote",
    "RequestVoteResponse",
    "Rng",
    "Role",
    "SnapshotInstall",
    "SnapshotMeta",
    "SoftState",
    "Status",
    "TimeoutNow",
    "bootstrap_state",
    "decode_membership",
    "encode_membership",
]
