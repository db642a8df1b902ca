"""State-machine snapshots for the runtime: capture cheaply, encode off the event loop, restore.

Taking a snapshot must not stop the node for the whole encoding (100,000 workloads take a few
hundred milliseconds to encode). ``capture`` runs on the event loop and only copies references:
objects are immutable values, so lists of them are a consistent point-in-time view; client
sessions are mutable and small, so they are copied. The returned function turns those parts
into snapshot rows (``plain_from_parts``, the same rows ``snapshot_plain`` would give for them)
and encodes them; the runtime runs it in a worker thread while the apply loop goes on.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from univrs import codec
from univrs.errors import ProtocolError, StorageError
from univrs.raft.messages import SnapshotMeta
from univrs.sm.snapshot import gc_paused, plain_from_parts, restore_plain
from univrs.sm.state import ClusterStateMachine

MAX_SNAPSHOT_BYTES = 1 << 34  # 16 GiB: a sanity bound for decoding our own snapshots


def capture(sm: ClusterStateMachine) -> Callable[[], bytes]:
    """A consistent view of ``sm`` now, and a thread-safe function that encodes it.

    The object tables give views (``Table.view``): the values as they are now, put in id
    order by the encoder, so the pause on the event loop is a copy of references."""
    workloads, instances, nodes = sm.stored_views()
    parts = {
        "policy": sm.policy,
        "last_index": sm.last_applied_index,
        "last_term": sm.last_applied_term,
        "clock_ms": sm.clock_ms,
        "balances": list(sm.ledger_items()),
        "sessions": [attrs.evolve(s, responses=dict(s.responses)) for s in sm.stored_sessions()],
        "tokens": list(sm.stored_tokens()),  # immutable values, like the objects
        "tokens_bootstrapped": sm.tokens_bootstrapped,
        "revision": sm.revision,
    }

    def encode() -> bytes:
        plain = plain_from_parts(
            workloads=workloads(),
            instances=instances(),
            nodes=nodes(),
            **parts,  # type: ignore[arg-type]
        )
        return codec.encode_plain(plain)

    return encode


def check_snapshot(meta: SnapshotMeta, data: bytes) -> str | None:
    """The core's ``snapshot_check`` (issue 12): None if a snapshot from the leader restores
    into a state machine at ``meta``'s index, else why not. Called once, by the core, on the
    complete and checksum-verified data, before anything is stored or replaced: a node never
    stores a snapshot it could not restore on its next start. (It decodes the data once more
    than the install does: ``SnapshotChecker`` avoids that by keeping what it restored.)"""
    try:
        sm = restore(data)
    except StorageError as exc:
        return str(exc)
    return _index_problem(meta, sm)


@attrs.define(eq=False)
class SnapshotChecker:
    """The core's ``snapshot_check`` that keeps what it restored for the install.

    The check restores the leader's snapshot to validate it; the install that follows at once
    (the core installs a snapshot right after it passes the check) would restore the same bytes
    again: at 1,000,000 + 1,000,000 objects, tens of seconds of CPU twice. ``take`` hands the
    checked state machine to the install instead. It is handed over only for the very bytes
    object and metadata it was restored from, once (the slot is emptied), and nothing else ever
    holds it, so the install gets exactly what ``restore(data)`` would return. One slot per
    node: a newer check replaces an older state machine nobody took."""

    _checked: tuple[SnapshotMeta, bytes, ClusterStateMachine] | None = None

    def __call__(self, meta: SnapshotMeta, data: bytes) -> str | None:
        """``check_snapshot``, keeping the restored state machine when it passes."""
        self._checked = None
        try:
            sm = restore(data)
        except StorageError as exc:
            return str(exc)
        problem = _index_problem(meta, sm)
        if problem is None:
            self._checked = (meta, data, sm)
        return problem

    def take(self, meta: SnapshotMeta, data: bytes) -> ClusterStateMachine | None:
        """The state machine checked for exactly this ``data`` object and ``meta``, once; else
        None (restore it)."""
        checked, self._checked = self._checked, None
        if checked is None or checked[1] is not data or checked[0] != meta:
            return None
        return checked[2]


def _index_problem(meta: SnapshotMeta, sm: ClusterStateMachine) -> str | None:
    if sm.last_applied_index != meta.index:
        return (
            f"snapshot data is at index {sm.last_applied_index}, but its metadata says {meta.index}"
        )
    return None


def restore(data: bytes) -> ClusterStateMachine:
    """The state machine a snapshot encodes; ``StorageError`` if it does not decode."""
    try:
        # The cyclic GC would rescan the growing heap many times while millions of acyclic
        # containers are decoded and built. One pause over both: the full collection it runs
        # once enabled again happens once, not over the decoded rows and again over the objects.
        with gc_paused():
            plain = codec.decode_plain(data, max_size=MAX_SNAPSHOT_BYTES, max_depth=64)
            return restore_plain(plain)
    except (ValueError, TypeError) as exc:
        raise StorageError(f"snapshot does not decode into a state machine: {exc}") from None
    except ProtocolError as exc:
        raise StorageError(f"snapshot is not valid CBOR: {exc}") from None
