"""A scenario harness for the Raft core: several RaftNodes, an explicit network and disks.

Tests read as transcripts (in the spirit of etcd's datadriven interaction tests): campaign n1,
tick n2 x k, deliver all / one message, drop messages to n3, partition {n1} | {n2, n3}, hold a
disk and persist it later, crash and restart, propose, read_index; then assert on ``status()``
and on what each node released (applied entries, reads, dropped reads).

The harness runs every Ready through the one interpreter of the contract
(univrs/raft/interpreter.py ``execute``, as the Trio driver and the simulator do): ``messages``
enter the network at once; a Ready's writes go to the node's write queue (``WriteQueue``: FIFO,
group commit), and ``messages_after_persist`` leave only when that write (and every earlier one)
is durable, after which ``persisted()`` is reported. By default disks are synchronous (a Ready
is durable as soon as it is taken); ``hold_disk(n)`` queues writes until ``persist(n)``. A crash
loses the queued writes.

Each node's state machine is the list of entries it applied; ``snapshot(n)`` encodes it as a
snapshot at the applied index, stores it on the node's disk and calls ``snapshot_taken``, then
compacts the disk as the core says. A ``Ready.snapshot`` replaces the state machine at once
(before the Ready's committed entries) and is stored on disk with the Ready's write, by the
same rule as the LMDB store (keep the log after the snapshot only if the log holds its last
entry). A restart loads the disk's snapshot and hands it to ``snapshot_taken`` like the runtime.
The disk model and the state machine's snapshot encoding are in disk.py.

Every step checks two invariants: at most one leader per term, and no two nodes apply different
entries at one index.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

import attrs
from disk import Disk, decode_state, encode_state

from univrs.raft import (
    Entry,
    EntryKind,
    HardState,
    InitialState,
    Membership,
    Message,
    RaftConfig,
    RaftNode,
    ReadState,
    Ready,
    Role,
    SnapshotInstall,
    SnapshotMeta,
    SoftState,
    Status,
    bootstrap_state,
    decode_membership,
)
from univrs.raft.interpreter import (
    InstallJob,
    MergedWrite,
    PersistJob,
    WriteQueue,
    execute,
    installed,
    report_persisted,
)

MessageType = type[Message] | tuple[type[Message], ...]
M = TypeVar("M", bound=Message)
Where = Callable[[Message], bool]


def entries_with_terms(terms: Sequence[int]) -> tuple[Entry, ...]:
    """A log whose entry i+1 has term terms[i]; data is derived from (index, term), so equal
    positions in two logs hold equal entries (as Log Matching requires)."""
    return tuple(
        Entry(term=t, index=i + 1, data=f"t{t}i{i + 1}".encode()) for i, t in enumerate(terms)
    )


@attrs.define(eq=False)
class NodeEffects:
    """The harness's side of the interpreter for one node (see ``Cluster._handle``)."""

    cluster: Cluster
    nid: str

    def soft_state_changed(self, soft: SoftState) -> None:
        pass  # the harness reads roles from status()

    def restore_snapshot(self, install: SnapshotInstall, job: InstallJob) -> None:
        # The state machine is restored before this Ready's committed entries apply.
        c = self.cluster
        c.installed[self.nid].append(install.meta)
        c.writes[self.nid].submit(job)
        c._restore(self.nid, install.data)
        if self.nid not in c.held:
            c._flush(self.nid)
        c.nodes[self.nid].applied(install.meta.index)

    def send(self, msg: Message) -> None:
        self.cluster._send(msg)

    def submit_write(self, job: PersistJob) -> None:
        c = self.cluster
        c.writes[self.nid].submit(job)
        if self.nid not in c.held:
            c._flush(self.nid)

    def apply_committed(self, entries: tuple[Entry, ...]) -> None:
        c = self.cluster
        nid = self.nid
        disk_index = {e.index: e for e in c.disks[nid].entries}
        for e in entries:
            assert not c.applied[nid] or c.applied[nid][-1].index + 1 == e.index
            # Applied entries must be durable locally (the core's min(commit, persisted)).
            assert disk_index.get(e.index) == e, f"{nid} applies non-durable {e}"
            seen = c.applied_at.setdefault(e.index, e)
            assert seen == e, f"State Machine Safety: {nid} applies {e}, another {seen}"
            c.applied[nid].append(e)
        c.nodes[nid].applied(entries[-1].index)

    def read_ready(self, ctx: int, index: int) -> None:
        self.cluster.reads[self.nid].append(ReadState(ctx=ctx, index=index))

    def read_dropped(self, ctx: int) -> None:
        self.cluster.dropped_reads[self.nid].append(ctx)


class Cluster:
    """RaftNodes wired through an explicit, test-controlled network and disks."""

    def __init__(
        self,
        initial: dict[str, InitialState],
        *,
        config: RaftConfig | None = None,
        configs: dict[str, RaftConfig] | None = None,
        classes: dict[str, type[RaftNode]] | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config or RaftConfig()
        self.configs = configs or {}
        self.classes = classes or {}  # e.g. a deliberately broken subclass for one node
        self.seed = seed
        self.initial = dict(initial)
        self.nodes: dict[str, RaftNode] = {}
        self.disks: dict[str, Disk] = {}
        self.writes: dict[str, WriteQueue[None]] = {}
        self.effects: dict[str, NodeEffects] = {}
        self.held: set[str] = set()
        self.crashed: set[str] = set()
        self.network: list[Message] = []
        self.blocked: set[tuple[str, str]] = set()
        self.applied: dict[str, list[Entry]] = {}
        self.reads: dict[str, list[ReadState]] = {}
        self.dropped_reads: dict[str, list[int]] = {}
        self.readies: dict[str, list[Ready]] = {}
        self.leaders: dict[int, str] = {}  # term -> the leader ever seen in it
        self.applied_at: dict[int, Entry] = {}  # index -> the entry applied there
        self.installed: dict[str, list[SnapshotMeta]] = {}  # snapshots received from leaders
        self.transcript: list[str] = []
        self.restarts = 0
        for nid, init in sorted(initial.items()):
            self.disks[nid] = Disk(hard_state=init.hard_state, entries=list(init.entries))
            self._start(nid, init)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def bootstrap(
        cls,
        voters: Iterable[str],
        learners: Iterable[str] = (),
        *,
        config: RaftConfig | None = None,
        seed: int = 0,
    ) -> Cluster:
        """A new static cluster: every member starts from bootstrap_state(membership)."""
        m = Membership(voters=frozenset(voters), learners=frozenset(learners))
        return cls({n: bootstrap_state(m) for n in m.members}, config=config, seed=seed)

    @classmethod
    def with_logs(
        cls,
        logs: Mapping[str, Sequence[int]],
        *,
        terms: dict[str, int] | None = None,
        config: RaftConfig | None = None,
        learners: Iterable[str] = (),
        classes: dict[str, type[RaftNode]] | None = None,
        seed: int = 0,
    ) -> Cluster:
        """Nodes whose logs have the given entry terms (membership: all keys but learners)."""
        learner_set = frozenset(learners)
        m = Membership(voters=frozenset(logs) - learner_set, learners=learner_set)
        init = {}
        for nid, log in logs.items():
            term = (terms or {}).get(nid, max(log, default=0))
            init[nid] = InitialState(
                hard_state=HardState(term=term), entries=entries_with_terms(log), membership=m
            )
        return cls(init, config=config, classes=classes, seed=seed)

    def _start(self, nid: str, init: InitialState) -> None:
        rng = random.Random(f"{self.seed}/{nid}/{self.restarts}")
        cfg = self.configs.get(nid, self.config)
        cls = self.classes.get(nid, RaftNode)
        self.nodes[nid] = cls(nid, rng=rng, config=cfg, initial=init)
        self.writes[nid] = WriteQueue()
        self.effects[nid] = NodeEffects(self, nid)
        self.applied[nid] = []
        self.reads.setdefault(nid, [])
        self.dropped_reads.setdefault(nid, [])
        self.readies.setdefault(nid, [])
        self.installed.setdefault(nid, [])

    # ---- views --------------------------------------------------------------------------------

    def status(self, nid: str) -> Status:
        return self.nodes[nid].status()

    def role(self, nid: str) -> Role:
        return self.status(nid).role

    def leader(self) -> str | None:
        """The live leader of the highest term, if any."""
        best: tuple[int, str] | None = None
        for nid, node in self.nodes.items():
            if nid in self.crashed:
                continue
            st = node.status()
            if st.role is Role.LEADER and (best is None or st.term > best[0]):
                best = (st.term, nid)
        return best[1] if best else None

    def log_terms(self, nid: str) -> list[int]:
        """The terms of a node's durable log, index 1 first (for Figure 7/8 assertions)."""
        return [e.term for e in self.disks[nid].entries]

    def disk_log(self, nid: str) -> list[Entry]:
        return list(self.disks[nid].entries)

    @overload
    def in_flight(
        self,
        *,
        src: str | None = None,
        dst: str | None = None,
        type: type[M],
        where: Where | None = None,
    ) -> list[M]: ...

    @overload
    def in_flight(
        self,
        *,
        src: str | None = None,
        dst: str | None = None,
        type: MessageType | None = None,
        where: Where | None = None,
    ) -> list[Message]: ...

    def in_flight(
        self,
        *,
        src: str | None = None,
        dst: str | None = None,
        type: MessageType | None = None,
        where: Where | None = None,
    ) -> list[Any]:
        """The messages in flight that match every given filter (a ``type`` narrows the result)."""
        return [m for m in self.network if _matches(m, src, dst, type, where)]

    # ---- events -------------------------------------------------------------------------------

    def tick(self, nid: str, times: int = 1) -> None:
        self.transcript.append(f"tick {nid} x{times}")
        for _ in range(times):
            self.nodes[nid].tick()
            self.process(nid)

    def tick_all(self, times: int = 1, *, deliver: bool = False) -> None:
        """Tick every live node ``times`` times (delivering the network after each round)."""
        self.transcript.append(f"tick all x{times}{' (deliver)' if deliver else ''}")
        for _ in range(times):
            for nid in sorted(self.nodes):
                if nid not in self.crashed:
                    self.nodes[nid].tick()
                    self.process(nid)
            if deliver:
                self.stabilize()

    def campaign(self, nid: str) -> None:
        self.transcript.append(f"campaign {nid}")
        self.nodes[nid].campaign()
        self.process(nid)

    def propose(self, nid: str, data: bytes) -> tuple[int, int]:
        self.transcript.append(f"propose {nid} {data!r}")
        out = self.nodes[nid].propose(data)
        self.process(nid)
        return out

    def propose_many(self, nid: str, items: Sequence[bytes]) -> tuple[int, int]:
        self.transcript.append(f"propose {nid} x{len(items)}")
        out = self.nodes[nid].propose_many(items)
        self.process(nid)
        return out

    def read_index(self, nid: str, ctx: int) -> None:
        self.transcript.append(f"read_index {nid} ctx={ctx}")
        self.nodes[nid].read_index(ctx)
        self.process(nid)

    def elect(self, nid: str) -> None:
        """Campaign ``nid`` and deliver everything; it must end up leader."""
        self.campaign(nid)
        self.stabilize()
        assert self.role(nid) is Role.LEADER, f"{nid} did not win: {self.status(nid)}"

    # ---- network ------------------------------------------------------------------------------

    def deliver(
        self,
        *,
        src: str | None = None,
        dst: str | None = None,
        type: MessageType | None = None,
        where: Where | None = None,
        limit: int | None = None,
    ) -> int:
        """Deliver the matching messages now in flight (not their answers), FIFO. Returns count."""
        batch = [m for m in self.network if _matches(m, src, dst, type, where)]
        if limit is not None:
            batch = batch[:limit]
        for m in batch:
            self.network.remove(m)
            self._deliver(m)
        return len(batch)

    def deliver_one(
        self,
        *,
        src: str | None = None,
        dst: str | None = None,
        type: MessageType | None = None,
        where: Where | None = None,
    ) -> Message:
        batch = [m for m in self.network if _matches(m, src, dst, type, where)]
        assert batch, f"no message in flight matches src={src} dst={dst} type={type}"
        self.network.remove(batch[0])
        self._deliver(batch[0])
        return batch[0]

    def stabilize(self, max_rounds: int = 2000) -> int:
        """Deliver until the network is empty (answers included). Returns messages delivered."""
        total = 0
        for _ in range(max_rounds):
            n = self.deliver()
            total += n
            if not n:
                return total
        raise AssertionError(f"network did not settle in {max_rounds} rounds")

    def drop(
        self,
        *,
        src: str | None = None,
        dst: str | None = None,
        type: MessageType | None = None,
        where: Where | None = None,
    ) -> int:
        """Lose the matching messages in flight."""
        keep = [m for m in self.network if not _matches(m, src, dst, type, where)]
        n = len(self.network) - len(keep)
        self.network = keep
        self.transcript.append(f"drop src={src} dst={dst} type={type}: {n}")
        return n

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups (both directions); nodes not named form
        one more group."""
        sets = [set(g) for g in groups]
        named = set().union(*sets)
        rest = set(self.nodes) - named
        if rest:
            sets.append(rest)
        self.blocked = {
            (a, b)
            for i, g in enumerate(sets)
            for j, h in enumerate(sets)
            if i != j
            for a in g
            for b in h
        }
        self.transcript.append(f"partition {' | '.join(str(sorted(s)) for s in sets)}")

    def isolate(self, nid: str) -> None:
        self.partition({nid})

    def cut(self, src: str, dst: str) -> None:
        """Cut one direction of one link."""
        self.blocked.add((src, dst))

    def heal(self) -> None:
        self.blocked = set()
        self.transcript.append("heal")

    def _send(self, m: Message) -> None:
        assert m.src != m.dst, f"message to self: {m}"
        self.network.append(m)

    def _deliver(self, m: Message) -> None:
        if m.dst in self.crashed or m.dst not in self.nodes or (m.src, m.dst) in self.blocked:
            return  # lost: the destination is down, unknown, or cut off
        self.nodes[m.dst].step(m)
        self.process(m.dst)

    # ---- disks and crashes --------------------------------------------------------------------

    def hold_disk(self, nid: str) -> None:
        """Queue this node's writes until persist(nid)."""
        self.held.add(nid)

    def release_disk(self, nid: str) -> None:
        self.held.discard(nid)
        self.persist(nid)

    def persist(self, nid: str) -> None:
        """Complete every queued write of ``nid`` (in order), then report it to the node."""
        self.transcript.append(f"persist {nid}")
        self._flush(nid)
        self.process(nid)

    def crash(self, nid: str) -> None:
        """Stop ``nid``; its queued (non-durable) writes are lost."""
        self.transcript.append(f"crash {nid}")
        self.crashed.add(nid)
        self.writes[nid] = WriteQueue()

    def restart(self, nid: str, *, give_snapshot: bool = True) -> None:
        """Restart ``nid`` from its disk: the state machine restarts from the disk's snapshot
        (or empty: applied = 0), and the snapshot is handed to ``snapshot_taken`` (unless
        ``give_snapshot`` is false: the test does it later)."""
        self.transcript.append(f"restart {nid}")
        disk = self.disks[nid]
        self.restarts += 1
        meta = disk.snapshot[0] if disk.snapshot else None
        after = meta.index if meta else 0
        init = InitialState(
            hard_state=disk.hard_state,
            entries=tuple(e for e in disk.entries if e.index > after),
            snapshot=meta,
            membership=self.initial[nid].membership,
            applied=after,
        )
        self.crashed.discard(nid)
        self._start(nid, init)
        if disk.snapshot is not None:
            meta, data = disk.snapshot
            self._restore(nid, data)
            if give_snapshot:
                disk.compact(self.nodes[nid].snapshot_taken(meta, data))
        self.process(nid)

    # ---- snapshots ----------------------------------------------------------------------------

    def snapshot(self, nid: str, *, keep: int = 0) -> int:
        """Snapshot ``nid``'s state machine at its applied index, as the runtime does: store it,
        call ``snapshot_taken(meta, data, keep=keep)``, compact the disk. Returns the index the
        core compacted to. (The applied index must be durable: not right after an install
        whose write is still held.)"""
        self.transcript.append(f"snapshot {nid} keep={keep}")
        node = self.nodes[nid]
        applied = self.applied[nid]
        assert applied, f"{nid} applied nothing to snapshot"
        last = applied[-1]
        meta = SnapshotMeta(index=last.index, term=last.term, membership=self.membership_at(nid))
        data = encode_state(applied)
        self.disks[nid].store_snapshot(meta, data)
        upto = node.snapshot_taken(meta, data, keep=keep)
        self.disks[nid].compact(upto)
        self.process(nid)
        return upto

    def membership_at(self, nid: str) -> Membership:
        """The configuration of ``nid``'s state machine: its last applied CONFIG entry."""
        for e in reversed(self.applied[nid]):
            if e.kind is EntryKind.CONFIG:
                return decode_membership(e.data)
        return self.initial[nid].membership

    def _restore(self, nid: str, data: bytes) -> None:
        entries = decode_state(data)
        for e in entries:
            seen = self.applied_at.setdefault(e.index, e)
            assert seen == e, f"State Machine Safety: {nid} restores {e}, another applied {seen}"
        self.applied[nid] = entries

    def _flush(self, nid: str) -> None:
        """Complete every queued write of ``nid`` in order and report each to the node."""
        node = self.nodes[nid]
        disk = self.disks[nid]
        queue = self.writes[nid]
        while not queue.idle:
            item = queue.take()
            if isinstance(item, InstallJob):
                disk.store_snapshot(item.meta, item.data)
                report_persisted(node, installed(item))
                continue
            assert isinstance(item, MergedWrite)
            if item.truncate_from is not None:
                disk.truncate_from(item.truncate_from)
            if item.entries:
                disk.append(item.entries)
            if item.hard_state is not None:
                disk.hard_state = item.hard_state
            report = queue.written(item)
            for m in item.after_persist:
                self._send(m)
            if report is not None:
                report_persisted(node, report)

    # ---- the Ready loop -----------------------------------------------------------------------

    def process(self, nid: str | None = None) -> None:
        """Handle every pending Ready of ``nid`` (or of all live nodes)."""
        for n in [nid] if nid else sorted(self.nodes):
            if n in self.crashed:
                continue
            node = self.nodes[n]
            for _ in range(10_000):
                if not node.has_ready():
                    break
                self._handle(n, node, node.ready())
            else:
                raise AssertionError(f"{n}: Ready loop did not settle")
            self._check(n)

    def _handle(self, nid: str, node: RaftNode, rd: Ready) -> None:
        self.readies[nid].append(rd)
        execute(rd, self.effects[nid])

    def _check(self, nid: str) -> None:
        problems = self.nodes[nid].problems()
        if problems:
            raise AssertionError("; ".join(problems))
        st = self.nodes[nid].status()
        # Compaction never passes what is committed and applied.
        assert st.first_index - 1 <= min(st.commit, st.applied), f"{nid} over-compacted: {st}"
        if st.role is Role.LEADER:
            other = self.leaders.setdefault(st.term, nid)
            assert other == nid, f"two leaders in term {st.term}: {other} and {nid}"

    # ---- released output ----------------------------------------------------------------------

    def applied_data(self, nid: str) -> list[bytes]:
        """The NORMAL entries ``nid`` applied, as data."""
        return [e.data for e in self.applied[nid] if e.kind is EntryKind.NORMAL]

    def read_ctxs(self, nid: str) -> list[int]:
        return [r.ctx for r in self.reads[nid]]

    @overload
    def sent(self, nid: str, type: type[M]) -> list[M]: ...

    @overload
    def sent(self, nid: str, type: MessageType) -> list[Message]: ...

    def sent(self, nid: str, type: MessageType) -> list[Any]:
        """Every message of ``type`` that ``nid`` handed out so far (both queues)."""
        return [
            m
            for rd in self.readies[nid]
            for m in (*rd.messages, *rd.messages_after_persist)
            if isinstance(m, type)
        ]


def _matches(
    m: Message,
    src: str | None,
    dst: str | None,
    type: MessageType | None,
    where: Where | None = None,
) -> bool:
    return (
        (src is None or m.src == src)
        and (dst is None or m.dst == dst)
        and (type is None or isinstance(m, type))
        and (where is None or where(m))
    )
