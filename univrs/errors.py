"""The error hierarchy shared by every layer (a leaf module: it imports nothing of ours).

The pure core and the state machine may import this module; library exceptions (LMDB, cbor2,
trio-websocket) are translated into these at the edge where they occur.
"""

from __future__ import annotations


class UnivrsError(Exception):
    """Base class of every error univrs raises on purpose."""


class NotLeader(UnivrsError):
    """This node is not the leader; ``leader_hint`` names the leader it knows of, if any."""

    def __init__(self, leader_hint: str | None = None, message: str | None = None) -> None:
        self.leader_hint = leader_hint
        super().__init__(message or f"not the leader (leader hint: {leader_hint or 'unknown'})")


class ProposalDropped(UnivrsError):
    """A proposal certainly did not and never will apply: it was refused before it reached the
    log (for example during a leader transfer), or its entry was replaced by a different entry
    at its index. Retrying it is safe."""


class OutcomeUnknown(UnivrsError):
    """A proposal reached the log, but this node cannot tell whether it committed (its entry
    was covered by a snapshot from another leader, or its waiter was abandoned). It may apply
    or may have applied already: retrying it is safe only with an idempotency key."""


class ConfigError(UnivrsError):
    """A configuration file or flag is invalid; the message says which key and why."""


class StorageError(UnivrsError):
    """The data directory is unusable: corrupt, foreign, locked or out of space."""


class ProtocolError(UnivrsError):
    """A peer or client broke the wire protocol (malformed, oversized or unexpected frame)."""


class Unavailable(UnivrsError):
    """The cluster cannot serve the request now (no leader, no quorum); retry later."""
