"""State-machine snapshots for the runtime: capture cheaply, encode off the event loop, restore.

Taking a snapshot must not stop the node for the whole encoding (100,000 workloads take a few
hundred milliseconds to encode). ``capture`` runs on the event loop and only copies references:
objects are immutable values, so lists of them are a consistent point-in-time view; client
sessions are mutable and small, so they are copied. The returned function rebuilds a private
state machine from those parts and encodes it; the runtime runs it in a worker thread while the
apply loop goes on.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from univrs import codec
from univrs.errors import ProtocolError, StorageError
from univrs.raft.messages import SnapshotMeta
from univrs.sm.snapshot import restore_plain, snapshot_plain
from univrs.sm.state import ClusterStateMachine

MAX_SNAPSHOT_BYTES = 1 << 34  # 16 GiB: a sanity bound for decoding our own snapshots


def capture(sm: ClusterStateMachine) -> Callable[[], bytes]:
    """A consistent view of ``sm`` now, and a thread-safe function that encodes it."""
    parts = {
        "policy": sm.policy,
        "last_index": sm.last_applied_index,
        "last_term": sm.last_applied_term,
        "clock_ms": sm.clock_ms,
        "workloads": list(sm.stored_workloads()),
        "instances": list(sm.stored_instances()),
        "nodes": list(sm.stored_nodes()),
        "balances": list(sm.ledger_items()),
        "sessions": [attrs.evolve(s, responses=dict(s.responses)) for s in sm.stored_sessions()],
    }

    def encode() -> bytes:
        clone = ClusterStateMachine.from_parts(**parts)  # type: ignore[arg-type]
        return codec.encode_plain(snapshot_plain(clone))

    return encode


def check_snapshot(meta: SnapshotMeta, data: bytes) -> str | None:
    """The core's ``snapshot_check`` (issue 12): None if a snapshot from the leader restores
    into a state machine at ``meta``'s index, else why not. Called once, by the core, on the
    complete and checksum-verified data, before anything is stored or replaced: a node never
    stores a snapshot it could not restore on its next start. (It decodes the data once more
    than the install does: the price of never storing what cannot be applied.)"""
    try:
        sm = restore(data)
    except StorageError as exc:
        return str(exc)
    if sm.last_applied_index != meta.index:
        return (
            f"snapshot data is at index {sm.last_applied_index}, but its metadata says {meta.index}"
        )
    return None


def restore(data: bytes) -> ClusterStateMachine:
    """The state machine a snapshot encodes; ``StorageError`` if it does not decode."""
    try:
        return restore_plain(codec.decode_plain(data, max_size=MAX_SNAPSHOT_BYTES, max_depth=64))
    except (ValueError, TypeError) as exc:
        raise StorageError(f"snapshot does not decode into a state machine: {exc}") from None
    except ProtocolError as exc:
        raise StorageError(f"snapshot is not valid CBOR: {exc}") from None
