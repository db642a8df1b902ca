"""``univrs state-scrub``: check a stopped node's ``state.lmdb`` against what it must hold.

Why (s14-small). The persistent state (``state.lmdb``, ``[state] backend = "lmdb"``) has no
checksums: LMDB checks none, and its rows are CBOR that a flipped bit may leave valid. The
log's entries (a CRC-32 each, checked on every read) and the stored snapshot (block and
whole-data CRCs, scrubbed by the node: docs/storage.md "Guarantees") do have them, and the
state is by construction the stored snapshot with the log's entries after it applied up to
the state's applied index (the state is never ahead of the log, and the log is never
compacted past the snapshot). So a trustworthy copy can always be rebuilt, and the scrub
compares the two by their canonical ``state_digest`` (the digest two replicas compare,
``GET /v1/node/digest``):

1. the state env's applied index ``A`` and its digest, streamed from its rows (every row of
   every table decoded on the way: ``capture_digest``);
2. the stored snapshot (at ``S <= A``) restored in memory, the entries ``S+1..A`` applied to
   it as the node applies them (``replay``), and its digest.

Equal: intact, unless the per-workload counts rows (derived data, not in the digest) differ
from a recount of the instance rows (s14-review). Different, or the state does not load or
decode: damaged, and the remedy is the one the node's start already names: move
``state.lmdb`` away, the next start rebuilds it from the stored snapshot and the log. A state
behind the stored snapshot (``A < S``, which the node's start replaces from the snapshot) is
not compared.

Cost: a second copy of the state in memory and the CPU of a restore, the replay and two
digests (at 100,000 + 100,000 objects a restore of 12 s and a digest of 7 s, medians of 3
on a loaded machine; at 1,000,000 + 1,000,000 about a minute and 3.5 GiB): an operator's
tool on a stopped node, not a background scrub (docs/storage.md, "State scrub (s14-small)").
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable

import attrs

from univrs.errors import StorageError
from univrs.raft.messages import Entry, EntryKind
from univrs.runtime.applier import apply_decoded
from univrs.runtime.payload import MAX_PAYLOAD_VERSION, decode_entry
from univrs.runtime.snapshots import capture_digest, restore
from univrs.server.statedir import STATE_DIR
from univrs.sm.state import ClusterStateMachine
from univrs.storage.log_store import LogStore
from univrs.storage.recover import stored_node_id
from univrs.storage.sm_tables import StateEnv

log = logging.getLogger(__name__)

REPLAY_BYTES = 4 << 20  # log entries read per storage call


@attrs.frozen(kw_only=True)
class StateScrub:
    """What ``scrub_state`` found. ``intact``: True, False (damaged) or None (not compared:
    ``reason`` says why)."""

    intact: bool | None
    reason: str
    applied_index: int
    snapshot_index: int
    replayed: int  # entries applied on top of the snapshot
    state_digest: str | None  # of state.lmdb
    expected_digest: str | None  # of the snapshot plus the log
    seconds: float


def replay(
    sm: ClusterStateMachine, entries: Iterable[Entry], max_payload_version: int
) -> ClusterStateMachine:
    """Apply committed ``entries`` to ``sm`` as the node's apply loop does (univrs/runtime/
    applier.py ``_apply_one``, its state machine part: a payload that does not decode is a
    failure at its index, a version-1 entry one command, a batch entry its commands at
    consecutive revisions, any other entry only marks its index applied)."""
    for entry in entries:
        if entry.kind is not EntryKind.NORMAL:
            sm.mark_applied(index=entry.index, term=entry.term)
        else:
            apply_decoded(sm, entry, decode_entry(entry.data, max_payload_version))
    return sm


def _entries(store: LogStore, lo: int, hi: int) -> Iterable[Entry]:
    index = lo
    while index <= hi:
        chunk = store.entries(index, hi + 1, max_bytes=REPLAY_BYTES)
        yield from chunk
        index = chunk[-1].index + 1


def scrub_state(
    data_dir: str | os.PathLike[str], *, max_payload_version: int = MAX_PAYLOAD_VERSION
) -> StateScrub:
    """Compare a stopped node's ``state.lmdb`` with its stored snapshot plus its log (see the
    module docstring). ``StorageError`` if the log store cannot be opened (a node runs on the
    data dir, no store) or the snapshot or an entry is damaged: then nothing trustworthy is
    there to compare with. Changes nothing (but an env of state format 1 or 2 is upgraded to 3,
    as the next start would: ``StateEnv.load``)."""
    started = time.monotonic()
    path = f"{data_dir}/{STATE_DIR}"
    if not os.path.isdir(path):
        raise StorageError(f"data dir {data_dir} has no persistent state ({path} missing)")
    store = LogStore.open(data_dir, node_id=stored_node_id(data_dir), create=False)
    try:
        snapshot = store.load_snapshot()
        snap_index = snapshot[0].index if snapshot is not None else 0

        def result(
            intact: bool | None,
            reason: str,
            applied: int,
            *,
            state_digest: str | None = None,
            expected_digest: str | None = None,
            replayed: int = 0,
        ) -> StateScrub:
            if intact is False:
                log.error("state env damaged", extra={"path": path, "reason": reason})
            return StateScrub(
                intact=intact,
                reason=reason,
                applied_index=applied,
                snapshot_index=snap_index,
                replayed=replayed,
                state_digest=state_digest,
                expected_digest=expected_digest,
                seconds=round(time.monotonic() - started, 3),
            )

        try:
            env = StateEnv(path)
        except StorageError as exc:
            return result(False, str(exc), 0)
        try:
            try:
                applied = env.applied()[0]
                state = env.load()
                state_digest = capture_digest(state)()
                counts = env.counts_damage()  # derived rows, not in the digest (s14-review)
            except Exception as exc:  # a row that does not decode is damage too
                return result(False, f"state.lmdb does not read back: {exc}", 0)
        finally:
            env.close()
        if applied < snap_index:
            return result(
                None,
                f"state.lmdb is at {applied}, behind the stored snapshot at {snap_index}: "
                "the next start replaces it from the snapshot",
                applied,
                state_digest=state_digest,
            )
        if applied > store.last_index():
            return result(False, f"state.lmdb is at {applied}, ahead of the log's end", applied)
        sm = restore(snapshot[1]) if snapshot is not None else ClusterStateMachine()
        replay(sm, _entries(store, snap_index + 1, applied), max_payload_version)
        expected = capture_digest(sm)()
        if expected != state_digest:
            return result(
                False,
                f"the digest of state.lmdb at {applied} differs from the stored snapshot's at "
                f"{snap_index} with the log's {applied - snap_index} entries after it applied",
                applied,
                state_digest=state_digest,
                expected_digest=expected,
                replayed=applied - snap_index,
            )
        if counts is not None:
            return result(
                False,
                f"{counts} (derived rows, not in the digest, which matches)",
                applied,
                state_digest=state_digest,
                expected_digest=expected,
                replayed=applied - snap_index,
            )
        return result(
            True,
            "state.lmdb matches the stored snapshot and the log",
            applied,
            state_digest=state_digest,
            expected_digest=expected,
            replayed=applied - snap_index,
        )
    finally:
        store.close()
