"""State-machine snapshots for the runtime: capture cheaply, encode off the event loop, restore.

Taking a snapshot must not stop the node for the whole encoding (100,000 workloads take a few
hundred milliseconds to encode). ``capture`` runs on the event loop and only copies references:
objects are immutable values, so lists of them are a consistent point-in-time view; client
sessions are mutable and small, so they are copied. The returned function turns those parts
into snapshot rows (``plain_from_parts``, the same rows ``snapshot_plain`` would give for them)
and encodes them; the runtime runs it in a worker thread while the apply loop goes on.

A state whose tables already store the snapshot's rows encoded (the LMDB backend,
``ClusterStateMachine.stored_raw_views``) is not encoded at all: the encoder writes the
snapshot's header and small parts and copies the stored rows' bytes in chunks (``_spliced``).
The bytes are exactly those of the encoding (tests/runtime/test_snapshot_stream.py), so the
format, the digest and every reader are unchanged; the cost is a copy in C instead of a
Python encoding of every object that held the interpreter lock for seconds at 100,000 objects
(the write pause of docs/state-at-scale.md).
"""

from __future__ import annotations

import gc
import io
import logging
import struct
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard

import attrs
import cbor2
import trio

from univrs import codec
from univrs.errors import ProtocolError, StorageError
from univrs.raft.messages import InstallSnapshot, SnapshotMeta
from univrs.raft.node import RaftNode
from univrs.sm.snapshot import _first, gc_paused, plain_from_parts, restore_plain, streamed_digest
from univrs.sm.snapshot_format import CheckStopped, check_stop
from univrs.sm.state import ClusterStateMachine
from univrs.sm.tables import RawRows

MAX_SNAPSHOT_BYTES = 1 << 34  # 16 GiB: a sanity bound for decoding our own snapshots

log = logging.getLogger("univrs.node")


def _parts(sm: ClusterStateMachine) -> dict[str, Any]:
    """The small parts of the state now (bounded: sessions, balances, tokens, scalars)."""
    return {
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


def _go_on() -> None:
    pass


def let_the_loop_run() -> None:
    """From a Trio worker thread: return once the Trio loop has run a callback of ours (a
    round trip through the loop, which then held the interpreter lock). ``capture``'s
    ``pause`` for the runtime: see ``capture``."""
    trio.from_thread.run_sync(_go_on)


def capture(sm: ClusterStateMachine, *, pause: Callable[[], None] = _go_on) -> Callable[[], bytes]:
    """A consistent view of ``sm`` now, and a thread-safe function that encodes it.

    The object tables give views (``Table.view``): the values as they are now, put in id
    order by the encoder, so the pause on the event loop is a copy of references. Tables that
    store encoded rows give those instead (``Table.raw_view``: a read transaction, O(1)).

    ``pause`` is called between two chunks of stored rows (``RAW_CHUNK`` rows, a millisecond
    or two of work): the runtime's ``let_the_loop_run`` makes the encoding wait there until
    the event loop has run, which bounds what the loop can wait for the interpreter lock to
    one chunk. Without it the loop gets the lock back by winning a race: LMDB's cursor
    releases and retakes the lock for every row, and CPython's lock lets a waiting thread
    ask for it only after a whole switch interval (5 ms) without a release. (A guarantee:
    at 1,000,000 + 1,000,000 objects the loop was not measured to stall without it,
    docs/state-at-scale.md, tenth increment.)"""
    raw = sm.stored_raw_views()
    parts = _parts(sm)

    if raw is not None:
        rows = dict(zip(("workloads", "instances", "nodes"), raw, strict=True))

        def encode_spliced() -> bytes:
            try:
                plain = plain_from_parts(workloads=(), instances=(), nodes=(), **parts)
                return _spliced(plain, rows, pause)
            finally:
                for view in raw:
                    view.close()

        return encode_spliced
    workloads, instances, nodes = sm.stored_views()

    def encode() -> bytes:
        plain = plain_from_parts(
            workloads=workloads(),
            instances=instances(),
            nodes=nodes(),
            **parts,
        )
        return codec.encode_plain(plain)

    return encode


def capture_digest(sm: ClusterStateMachine) -> Callable[[], str]:
    """A consistent view of ``sm`` now (as ``capture``: O(1) on the event loop) and a
    thread-safe function that computes its ``state_digest`` from it. On LMDB the stored rows
    are decoded one batch at a time and hashed as they come (``streamed_digest``): the state
    is never built whole, and the work runs in a worker thread, not on the event loop."""
    raw = sm.stored_raw_views()
    parts = _parts(sm)
    if raw is None:  # in memory: the views now, the rows built in the thread
        workloads, instances, nodes = sm.stored_views()

        def whole() -> str:
            plain = plain_from_parts(
                workloads=workloads(),
                instances=instances(),
                nodes=nodes(),
                **parts,
            )
            keys = ("workloads", "instances", "nodes")
            return streamed_digest(plain, {k: sorted(plain[k], key=_first) for k in keys})

        return whole
    rows = dict(zip(("workloads", "instances", "nodes"), raw, strict=True))

    def streamed() -> str:
        try:
            plain = plain_from_parts(workloads=(), instances=(), nodes=(), **parts)
            return streamed_digest(plain, {k: _decoded(v) for k, v in rows.items()})
        finally:
            for view in raw:
                view.close()

    return streamed


def _decoded(rows: RawRows) -> Iterator[Any]:
    """The rows of a raw view, decoded one at a time (each chunk is concatenated CBOR rows)."""
    for chunk in rows.chunks():
        fp = io.BytesIO(chunk)
        decoder = cbor2.CBORDecoder(fp)
        while fp.tell() < len(chunk):
            yield decoder.decode()


def _head(major: int, n: int) -> bytes:
    """A CBOR item head: major type and length, in the shortest form (as cbor2 writes it)."""
    if n < 24:
        return bytes(((major << 5) | n,))
    for extra, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes(((major << 5) | extra,)) + struct.pack(fmt, n)
    raise ValueError(f"length {n} does not fit a CBOR head")


def _spliced(
    plain: dict[str, Any], rows: dict[str, RawRows], pause: Callable[[], None] = _go_on
) -> bytes:
    """``codec.encode_plain(plain)`` with the (empty) row lists named in ``rows`` replaced by
    those stored rows: the same bytes the encoding of the full plain data gives, since every
    stored row is ``cbor2.dumps`` of the row ``plain_from_parts`` would build, and a CBOR map
    or array is its head followed by its items' encodings."""
    out = [_head(5, len(plain))]
    for key, value in plain.items():
        out.append(codec.encode_plain(key))
        view = rows.get(key)
        if view is None:
            out.append(codec.encode_plain(value))
            continue
        assert value == [], f"{key}: rows come from the view only"
        out.append(_head(4, view.count))
        for chunk in view.chunks():
            out.append(chunk)
            pause()  # the event loop runs (``capture``)
    return b"".join(out)  # CPython releases the interpreter lock for the copy of a large join


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


STOPPED = "the check was stopped: the snapshot can no longer be installed"


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

    # Where to restore what is checked (None: in memory); ``StateEnv.stage`` on the LMDB
    # backend, so a leader's snapshot is restored straight into an environment.
    into: Callable[[bytes], ClusterStateMachine] | None = None
    _checked: tuple[SnapshotMeta, bytes, ClusterStateMachine] | None = None
    # What ``precheck`` found for a snapshot the core is about to check: (meta, data, the
    # state machine or None, the problem or None).
    _ahead: tuple[SnapshotMeta, bytes, ClusterStateMachine | None, str | None] | None = None
    # Begins writing the snapshot's file while it is checked; returns what drops it if the
    # check fails (``LogStore.prewrite_install``; None: the install writes it after).
    prewrite: Callable[[SnapshotMeta, bytes], Callable[[], None]] | None = None
    # What drops the file ``precheck`` began for ``_ahead`` (``discard``).
    _drop: Callable[[], None] | None = None
    # Drops the environment ``into`` staged a state machine on that is not installed after
    # all (``StateEnv.unstage``; s13-audit: each one used to stay open and on disk, a whole
    # copy of the state, until a later staged snapshot was installed or the node restarted).
    unstage: Callable[[ClusterStateMachine], None] | None = None

    def _release(self, sm: ClusterStateMachine | None) -> None:
        """``sm`` was restored here and will not be installed: its staged environment goes."""
        if sm is not None and self.unstage is not None:
            self.unstage(sm)

    def precheck(
        self, meta: SnapshotMeta, data: bytes, stop: Callable[[], bool] | None = None
    ) -> None:
        """Check ``data`` ahead of the core's call (thread-safe: touches only its own slot;
        the runtime runs it in a worker thread, ``RaftNode.snapshot_to_check`` says what the
        core will check). Restoring a million objects on the event loop would stall the node
        for tens of seconds: no heartbeats answered, no API, no pongs.

        ``stop``: polled by the staging (``snapshot_format.check_stop``) between blocks of
        rows; once it says True the check ends early as not passed (``STOPPED``), its file
        dropped: the runtime stops a check whose snapshot can no longer be installed
        (univrs/runtime/checking.py). A restore in memory polls it too (s14-small): after
        the decode of the data, then between blocks of rows."""
        token = check_stop.set(stop)
        try:
            self._precheck(meta, data)
        finally:
            check_stop.reset(token)

    def _precheck(self, meta: SnapshotMeta, data: bytes) -> None:
        older, self._ahead, self._drop = self._ahead, None, None
        if older is not None:
            self._release(older[2])  # checked again: the one before is not installed
        # The file written meanwhile, off the storage writer's queue (docs/state-at-scale.md,
        # fourteenth increment): the install that follows a passed check then waits for none
        # or little of it.
        drop = None
        if self.prewrite is not None:
            try:
                drop = self.prewrite(meta, data)
            except Exception:  # the install then writes the file itself: only later
                log.warning("cannot write the snapshot's file ahead", exc_info=True)
        sm: ClusterStateMachine | None = None
        try:
            sm = restore(data, self.into)
            problem = _index_problem(meta, sm)
        except StorageError as exc:
            problem = str(exc)
        except CheckStopped:
            problem = STOPPED
        except BaseException:
            if drop is not None:
                drop()
            raise
        if problem is not None and drop is not None:
            drop()  # never installed: its file is garbage
        if problem is not None:
            self._release(sm)  # restored, but not at its metadata's index
        self._ahead = (meta, data, sm if problem is None else None, problem)
        self._drop = drop if problem is None else None

    def discard(self, meta: SnapshotMeta) -> None:
        """The core stepped the last chunk of ``meta``'s snapshot and did not call the check
        (superseded while it ran: a newer commit, term or snapshot; univrs/runtime/checking.py):
        what ``precheck`` kept for it goes, and the file begun ahead is dropped."""
        ahead = self._ahead
        if ahead is None or ahead[0] != meta:
            return
        drop, self._ahead, self._drop = self._drop, None, None
        if drop is not None:
            drop()
        self._release(ahead[2])

    def found(self, meta: SnapshotMeta, data: bytes) -> str | None:
        """What ``precheck`` found wrong with exactly this ``meta`` and ``data`` (None: it
        passed, or it was not checked ahead)."""
        ahead = self._ahead
        if ahead is None or ahead[0] != meta or ahead[1] is not data:
            return None
        return ahead[3]

    def __call__(self, meta: SnapshotMeta, data: bytes) -> str | None:
        """``check_snapshot``, keeping the restored state machine when it passes; answered
        from ``precheck`` when that checked the same metadata and bytes."""
        untaken, self._checked = self._checked, None
        if untaken is not None:
            self._release(untaken[2])
        ahead, self._ahead, self._drop = self._ahead, None, None
        sm: ClusterStateMachine | None
        if ahead is not None and ahead[0] == meta and (ahead[1] is data or ahead[1] == data):
            _, _, sm, problem = ahead
        else:
            if ahead is not None:
                self._release(ahead[2])  # another snapshot's: not installed
            try:
                sm = restore(data, self.into)
                problem = _index_problem(meta, sm)
            except StorageError as exc:
                sm, problem = None, str(exc)
        if problem is None and sm is not None:
            self._checked = (meta, data, sm)  # this very bytes object, for ``take``
        elif sm is not None:
            self._release(sm)
        return problem

    def take(self, meta: SnapshotMeta, data: bytes) -> ClusterStateMachine | None:
        """The state machine checked for exactly this ``data`` object and ``meta``, once; else
        None (restore it)."""
        checked, self._checked = self._checked, None
        if checked is None or checked[1] is not data or checked[0] != meta:
            if checked is not None:
                self._release(checked[2])
            return None
        return checked[2]


def precheck_due(ev: object, core: RaftNode) -> TypeGuard[InstallSnapshot]:
    """Is ``ev`` a snapshot's last chunk that the core would check with a
    ``SnapshotChecker``? (Cheap: the driver asks it of every event.)

    Only a chunk the core would check now (``snapshot_check_due``: from the leader we follow,
    completing the stream held) waits behind a check in flight (checking.py); any other last
    chunk is stepped at once, like any other chunk, and the core refuses or answers it without
    a check (s13-audit: a made-up peer's last chunks used to be kept in memory, unbounded,
    until the check in flight ended, and refused only then)."""
    return (
        type(ev) is InstallSnapshot
        and ev.done
        and isinstance(core.snapshot_check, SnapshotChecker)
        and core.snapshot_check_due(ev)
    )


def _index_problem(meta: SnapshotMeta, sm: ClusterStateMachine) -> str | None:
    if sm.last_applied_index != meta.index:
        return (
            f"snapshot data is at index {sm.last_applied_index}, but its metadata says {meta.index}"
        )
    return None


def restore(
    data: bytes, into: Callable[[bytes], ClusterStateMachine] | None = None
) -> ClusterStateMachine:
    """The state machine a snapshot encodes; ``StorageError`` if it does not decode.

    ``into``: restores the data elsewhere than in memory (``StateEnv.stage``: straight into
    a new LMDB environment, a row at a time), with the same reader and checks.
    The state restored in memory leaves the cyclic GC's generations (``gc.freeze``, below)."""
    # Cyclic garbage alive at the ``gc.freeze`` below would never be collected: collect it
    # first (before the new state exists, so this walk does not include it).
    if into is None:
        gc.collect()
    try:
        # The cyclic GC would rescan the growing heap many times while millions of acyclic
        # containers are decoded and built. One pause over both.
        with gc_paused():
            if into is not None:
                return into(data)  # nothing of it stays in memory: no freeze
            plain = codec.decode_plain(data, max_size=MAX_SNAPSHOT_BYTES, max_depth=64)
            stop = check_stop.get()
            if stop is not None and stop():  # the decode (seconds at 1M) is not stoppable
                raise CheckStopped
            sm = restore_plain(plain)  # polls the stop between blocks of rows
            del plain
    except (ValueError, TypeError) as exc:
        raise StorageError(f"snapshot does not decode into a state machine: {exc}") from None
    except ProtocolError as exc:
        raise StorageError(f"snapshot is not valid CBOR: {exc}") from None
    # The restored state is millions of long-lived, acyclic objects: the next full collection
    # would walk all of them (0.14 s of CPU per 200,000 objects measured, a pause on the event
    # loop), and again at every later one. Moved to the permanent generation instead. Frozen
    # objects are still freed by reference counting (a state replaced by a later install goes
    # at once: tests/runtime/test_snapshots.py); only a reference cycle among objects alive
    # now would stay, and the state holds none.
    gc.freeze()
    return sm
