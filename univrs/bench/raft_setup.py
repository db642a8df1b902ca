"""The Raft-runtime set-up the runtime microbenchmarks share (scripts/bench_follower_append.py,
bench_leader_batch.py): a real ``RaftRuntime`` of one member of a three-voter cluster (a real
``RaftNode``, a real ``LogStore`` on LMDB, ``NodeMetrics``) in one Trio loop, its transport a
sink that encodes each message as a link does, a transport reader (``_Reading``) to feed frame
bytes to as the direct path does, and a digest of what a run sent and logged. Two switches time
the CPU alone: LMDB without sync (``lmdb_without_sync``) and the state machine's apply stubbed
out (``stub_apply``); a benchmark turns them on before it builds a runtime."""

from __future__ import annotations

import contextlib
import cProfile
import os
import random
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import lmdb
import trio

from univrs.codec import decode_frame, encode_message
from univrs.config import NodeConfig
from univrs.net.inbound_frames import FrameReading, InboundConnection, _Reading
from univrs.net.settings import TransportSettings
from univrs.net.stats import PeerCounters
from univrs.raft import InitialState, Membership, RaftNode, bootstrap_state
from univrs.raft.messages import AppendEntriesResponse, Entry, Message
from univrs.runtime.applier import Applier
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.metrics import NodeMetrics
from univrs.sm.state import ClusterStateMachine
from univrs.storage.log_store import LogStore

MEMBERS = Membership(
    voters=frozenset({"n1", "n2", "n3"}),
    addresses=(("n1", "127.0.0.1:1"), ("n2", "127.0.0.1:2"), ("n3", "127.0.0.1:3")),
)

_open = lmdb.open


def _open_nosync(*args: Any, **kwargs: Any) -> Any:
    kwargs["sync"] = False
    kwargs["metasync"] = False
    return _open(*args, **kwargs)


def lmdb_without_sync() -> None:
    """Open every LMDB environment without sync from now on: the CPU is timed, not the disk
    (the write path is the same code; the storage modules look ``lmdb.open`` up per call)."""
    lmdb.open = _open_nosync  # type: ignore[assignment]


def _apply_stub(self: Applier, entry: Entry) -> int:
    self.applied_index, self.applied_term = entry.index, entry.term
    return 1


def stub_apply() -> None:
    """Make ``Applier._apply_one`` only record the index: the state machine's apply is another
    slice."""
    Applier._apply_one = _apply_stub  # type: ignore[method-assign]


def scratch_folder() -> str:
    """A new folder for a log, in memory (/dev/shm) where there is one."""
    return tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


class Sink:
    """The transport: encodes what the runtime sends, as a link does (one frame each)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, msg: Message) -> None:
        self.sent.append(encode_message(msg))

    def send_now(self, msgs: Iterable[Message]) -> None:
        for msg in msgs:
            self.sent.append(encode_message(msg))


class RecordingSink(Sink):
    """A ``Sink`` that keeps the messages too (``msgs``), for a harness to answer them."""

    def __init__(self) -> None:
        super().__init__()
        self.msgs: list[Message] = []

    def send(self, msg: Message) -> None:
        self.msgs.append(msg)
        self.sent.append(encode_message(msg))

    def send_now(self, msgs: Iterable[Message]) -> None:
        for msg in msgs:
            self.msgs.append(msg)
            self.sent.append(encode_message(msg))


def new_log(node_id: str) -> tuple[LogStore, InitialState]:
    """A new log of ``node_id`` (in ``scratch_folder()``) holding ``MEMBERS``' bootstrap, and
    that initial state."""
    store = LogStore.open(scratch_folder(), node_id=node_id, cluster_id="c")
    initial = bootstrap_state(MEMBERS)
    store.append(hard_state=initial.hard_state, truncate_from=None, entries=initial.entries)
    return store, initial


def new_runtime(node_id: str, sink: Sink, **options: Any) -> tuple[RaftRuntime, LogStore]:
    """A runtime of ``node_id`` on a new log bootstrapped with ``MEMBERS``, sending through
    ``sink``, with no ticks while timing; ``options`` go to ``RaftRuntime`` as they are (e.g.
    ``packing``). Start it with ``nursery.start(runtime.run)``."""
    store, initial = new_log(node_id)
    config = NodeConfig(node_id=node_id).raft_config()
    core = RaftNode(node_id, rng=random.Random(1), config=config, initial=initial)
    runtime: RaftRuntime

    def status() -> Any:
        return runtime.status()

    metrics = NodeMetrics(status, storage=store.statistics)
    runtime = RaftRuntime(
        core=core,
        sm=ClusterStateMachine(),
        storage=store,
        transport=sink,
        tick_seconds=3600.0,  # no ticks while timing
        metrics=metrics,
        write_inline_bytes=NodeConfig().inline_write_bytes,
        **options,
    )
    return runtime, store


class _Scope:
    cancel_called = False


class _WS:
    closed = None


def frame_reading(
    *,
    node_id: str,
    inbox: Any,
    leave: Any,
    configured: dict[str, str],
    src: str,
    term: int,
    incarnation: str | None,
    decode: Callable[..., Any] = decode_frame,
) -> _Reading:
    """A transport reader of ``node_id`` (its members' addresses ``configured``) for frames from
    ``src`` (a leader of ``term`` at most), whose hello named ``incarnation`` (attested for its
    messages, as in a cluster): ``take(frame)`` decodes (with ``decode``), checks and hands on
    a frame as the direct path does, into ``inbox`` (``leave``: the runtime's inline step, or
    None). Built without a connection: only what ``_Reading.take`` reads is set."""
    reader: Any = object.__new__(FrameReading)
    reader.node_id = node_id
    reader.inbox = inbox
    reader.leave = leave
    reader.settings = TransportSettings()
    reader.decode = decode
    reader._configured = configured
    reader._source = src
    reader._source_term = term
    reader._leader_terms = {}
    reader._rejected = 0
    reader._warned_protocol = set()
    conn: Any = InboundConnection.__new__(InboundConnection)
    object.__setattr__(conn, "scope", _Scope())
    object.__setattr__(conn, "incarnation", None)
    object.__setattr__(conn, "hello", type("H", (), {"src": src})())
    return _Reading(reader, inbox, _WS(), conn, PeerCounters(), incarnation)  # type: ignore[arg-type]


def reading_for(
    runtime: RaftRuntime,
    node_id: str,
    src: str,
    term: int,
    incarnation: str,
    decode: Callable[..., Any] = decode_frame,
) -> _Reading:
    """``frame_reading`` into ``runtime``'s inbox, with its inline step, among ``MEMBERS``."""
    return frame_reading(
        node_id=node_id,
        inbox=runtime.inbox.sender,
        leave=runtime.inbox.leave,
        configured=dict(MEMBERS.addresses),
        src=src,
        term=term,
        incarnation=incarnation,
        decode=decode,
    )


async def idle(runtime: RaftRuntime) -> None:
    """Wait until the runtime has nothing left to do: its inbox empty and waited on, the apply
    loop and the writer idle."""
    while True:
        stats = runtime.inbox.receiver.statistics()
        if (
            runtime._parked
            and stats.tasks_waiting_receive
            and not stats.current_buffer_used
            and runtime._applier._idle
            and not runtime._applier._queue
            and runtime._writer.idle
        ):
            return
        await trio.sleep(0)


def ack(term: int, src: str, dst: str, index: int) -> AppendEntriesResponse:
    """A follower's successful AppendEntriesResponse up to ``index``."""
    return AppendEntriesResponse(
        term=term, src=src, dst=dst, success=True, index=index, hint_index=0, hint_term=0
    )


@contextlib.contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """A cProfile of the block, written to ``path`` (nothing without one)."""
    if not path:
        yield
        return
    prof = cProfile.Profile()
    prof.enable()
    yield
    prof.disable()
    prof.dump_stats(path)


def digest_run(digest: Any, sink: Sink, store: LogStore) -> None:
    """Add to ``digest`` every frame ``sink`` sent, then the log and the hard state ``store``
    holds (the rest of its meta is random), and close ``store``: the same in every tree that
    writes the same bytes and sends the same frames."""
    digest.update(b"".join(sink.sent))

    def stored(txn: Any) -> None:
        env = store._env
        for key, value in txn.cursor(db=env.log):
            digest.update(key + value)
        for key in (b"hard_state", b"pins", b"named"):
            digest.update(key + (txn.get(key, db=env.meta) or b""))

    store._env.read(stored)
    store.close()
