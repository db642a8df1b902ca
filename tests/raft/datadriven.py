"""Data-driven transcripts for the Raft core (in the spirit of etcd's datadriven tests).

A file under ``tests/raft/testdata/`` is a list of blocks::

    # comments start with '#'
    command arg key=value ...
    ----
    expected output (may be empty)

A reviewer reads it as input and output; the runner (``run_file``) executes each command on a
``Cluster`` (harness.py) and compares. ``UNIVRS_REWRITE_TESTDATA=1 pytest
tests/raft/test_raft_datadriven.py`` rewrites the expected output from what the code does now
(read the diff before committing it).

Commands (nodes are named n1, n2, ...):

=============================================  =============================================
``bootstrap voters=a,b learners=c spares=d``    a new static cluster; spares start empty;
``  prevote=false checkquorum=false``           core options; ``mutants=n2:NAME,...`` builds
``  mutants=n2:change-before-term-commit``      nodes from the simulator's broken cores
``campaign n1`` / ``tick n1 [k]``               events on one node
``tick-all [k]``                                k ticks everywhere, delivering after each
``propose n1 data`` / ``read-index n2 ctx``     client requests (errors are printed)
``propose-conf n1 voters=.. learners=..``       a configuration change (``incs=n4:b``)
``stabilize`` / ``deliver [src=] [dst=]``       move messages; every delivery is printed
``  [type=AppendEntries]``                      (``drop`` takes the same filters)
``partition n1,n5 n2,n3`` / ``heal``            cut links between groups / restore them
``hold-disk n1`` / ``persist n1``               stall a disk / complete its writes
``crash n1`` / ``restart n1`` / ``wipe n1``     lose unsynced writes / start from disk /
                                                start from an empty data dir
``status [n..]`` / ``log n1`` / ``applied n1``  views; ``reads n2`` lists released reads
``stash type=..`` / ``unstash``                  delay messages: out of the network, back later
``network``                                     messages in flight
=============================================  =============================================

A safety violation the harness detects (two leaders in a term, two entries applied at one
index, a broken ``problems()`` invariant) ends the file's run and is printed as
``violation: ...``: files that replay a mutant show the damage that way.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from typing import TypedDict

from harness import Cluster

from univrs.errors import UnivrsError
from univrs.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InitialState,
    InstallSnapshot,
    InstallSnapshotResponse,
    Membership,
    Message,
    RaftConfig,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
    bootstrap_state,
    decode_membership,
)
from univrs.raft.messages import COMMIT_NOTICE_CTX
from univrs.sim.mutants import MUTANTS

REWRITE = os.environ.get("UNIVRS_REWRITE_TESTDATA") == "1"
SEP = "----"
MAX_LINES = 40  # of output per command


# ---- formatting -----------------------------------------------------------------------------


def fmt_membership(m: Membership) -> str:
    out = "v=" + ",".join(sorted(m.voters))
    if m.learners:
        out += " l=" + ",".join(sorted(m.learners))
    if m.incarnations:
        out += " inc=" + ",".join(f"{n}:{i}" for n, i in sorted(m.incarnations))
    return out


def fmt_entry(e: Entry) -> str:
    if e.kind is EntryKind.NOOP:
        what = "noop"
    elif e.kind is EntryKind.CONFIG:
        what = f"conf({fmt_membership(decode_membership(e.data))})"
    else:
        what = repr(e.data.decode(errors="replace"))
    return f"{e.index}/{e.term} {what}"


def fmt_message(m: Message) -> str:
    head = f"{m.src}->{m.dst} "
    if isinstance(m, RequestVote):
        kind = "PreVote" if m.pre_vote else "Vote"
        extra = " transfer" if m.transfer else ""
        return f"{head}{kind} term={m.term} last={m.last_log_index}/{m.last_log_term}{extra}"
    if isinstance(m, RequestVoteResponse):
        kind = "PreVoteResp" if m.pre_vote else "VoteResp"
        return f"{head}{kind} term={m.term} {'granted' if m.granted else 'rejected'}"
    if isinstance(m, AppendEntries):
        ents = ", ".join(fmt_entry(e) for e in m.entries)
        return (
            f"{head}App term={m.term} prev={m.prev_log_index}/{m.prev_log_term} "
            f"commit={m.commit} [{ents}]"
        )
    if isinstance(m, AppendEntriesResponse):
        if m.success:
            return f"{head}AppResp term={m.term} ok index={m.index}"
        return (
            f"{head}AppResp term={m.term} reject index={m.index} hint={m.hint_index}/{m.hint_term}"
        )
    if isinstance(m, Heartbeat):
        if m.ctx == COMMIT_NOTICE_CTX:
            return f"{head}Heartbeat term={m.term} commit={m.commit} notice"
        return f"{head}Heartbeat term={m.term} commit={m.commit} round={m.ctx}"
    if isinstance(m, HeartbeatResponse):
        return f"{head}HeartbeatResp term={m.term} round={m.ctx}"
    if isinstance(m, ReadIndexRequest):
        return f"{head}ReadIndex term={m.term}"  # request ids are random: not shown
    if isinstance(m, ReadIndexResponse):
        return f"{head}ReadIndexResp term={m.term} index={m.index} {'ok' if m.ok else 'failed'}"
    if isinstance(m, TimeoutNow):
        return f"{head}TimeoutNow term={m.term}"
    if isinstance(m, InstallSnapshot):
        return (
            f"{head}Snapshot term={m.term} at={m.meta.index}/{m.meta.term} "
            f"offset={m.offset} len={len(m.data)} done={m.done}"
        )
    if isinstance(m, InstallSnapshotResponse):
        return f"{head}SnapshotResp term={m.term} offset={m.offset} ok={m.success}"
    return f"{head}{type(m).__name__} term={m.term}"


# ---- the runner -------------------------------------------------------------------------------


class Transcript(Cluster):
    """A Cluster that records every delivery (and loss) for the transcript."""

    out: list[str]

    def _deliver(self, m: Message) -> None:
        lost = m.dst in self.crashed or m.dst not in self.nodes or (m.src, m.dst) in self.blocked
        self.out.append(("  lost " if lost else "  ") + fmt_message(m))
        super()._deliver(m)


def _kv(args: list[str]) -> tuple[list[str], dict[str, str]]:
    pos = [a for a in args if "=" not in a]
    kv = dict(a.split("=", 1) for a in args if "=" in a)
    return pos, kv


def _ids(value: str) -> frozenset[str]:
    return frozenset(v for v in value.split(",") if v)


class Filters(TypedDict, total=False):
    """Which messages a deliver/drop/reorder command applies to (all of them if empty)."""

    src: str
    dst: str
    type: tuple[type[Message], ...]


def _filters(kv: dict[str, str]) -> Filters:
    out: Filters = {}
    if "src" in kv:
        out["src"] = kv["src"]
    if "dst" in kv:
        out["dst"] = kv["dst"]
    if "type" in kv:
        names = {t.__name__: t for t in _MESSAGE_TYPES}
        out["type"] = tuple(names[t] for t in kv["type"].split(","))
    return out


def _match(m: Message, f: Filters) -> bool:
    if "src" in f and m.src != f["src"]:
        return False
    if "dst" in f and m.dst != f["dst"]:
        return False
    types = f.get("type")
    return types is None or isinstance(m, types)


_MESSAGE_TYPES = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    TimeoutNow,
    InstallSnapshot,
    InstallSnapshotResponse,
)


class Runner:
    """Runs the commands of one file against one cluster."""

    def __init__(self) -> None:
        self.c: Transcript | None = None
        self.read_seen: dict[str, int] = {}
        self.stashed: list[Message] = []

    @property
    def cluster(self) -> Transcript:
        assert self.c is not None, "bootstrap first"
        return self.c

    def run(self, line: str) -> list[str]:
        cmd, *args = line.split()
        out: list[str] = []
        if self.c is not None:
            self.c.out = out
        handler: Callable[[list[str], list[str]], None] = getattr(
            self, "do_" + cmd.replace("-", "_")
        )
        try:
            handler(args, out)
        except UnivrsError as exc:
            out.append(f"error: {type(exc).__name__}: {exc}")
        return out

    # ---- commands

    def do_bootstrap(self, args: list[str], out: list[str]) -> None:
        _, kv = _kv(args)
        m = Membership(voters=_ids(kv.get("voters", "")), learners=_ids(kv.get("learners", "")))
        init = {n: bootstrap_state(m) for n in m.members}
        init.update({n: InitialState() for n in _ids(kv.get("spares", ""))})
        config = RaftConfig(
            pre_vote=kv.get("prevote", "true") == "true",
            check_quorum=kv.get("checkquorum", "true") == "true",
        )
        classes = {}
        for item in _ids(kv.get("mutants", "")):
            nid, name = item.split(":")
            classes[nid] = MUTANTS[name].cls
        self.c = Transcript(init, config=config, classes=classes)
        self.c.out = out

    def do_campaign(self, args: list[str], out: list[str]) -> None:
        self.cluster.campaign(args[0])

    def do_tick(self, args: list[str], out: list[str]) -> None:
        self.cluster.tick(args[0], int(args[1]) if len(args) > 1 else 1)

    def do_tick_all(self, args: list[str], out: list[str]) -> None:
        self.cluster.tick_all(int(args[0]) if args else 1, deliver=True)

    def do_propose(self, args: list[str], out: list[str]) -> None:
        term, index = self.cluster.propose(args[0], args[1].encode())
        out.append(f"proposed {index}/{term}")

    def do_propose_conf(self, args: list[str], out: list[str]) -> None:
        (nid,), kv = _kv(args)
        incs = tuple((p.split(":")[0], p.split(":")[1]) for p in kv.get("incs", "").split(",") if p)
        m = Membership(
            voters=_ids(kv.get("voters", "")),
            learners=_ids(kv.get("learners", "")),
            incarnations=incs,
        )
        term, index = self.cluster.nodes[nid].propose_membership(m)
        self.cluster.process(nid)
        out.append(f"proposed {index}/{term} conf({fmt_membership(m)})")

    def do_read_index(self, args: list[str], out: list[str]) -> None:
        self.cluster.read_index(args[0], int(args[1]))

    def do_stabilize(self, args: list[str], out: list[str]) -> None:
        self.cluster.stabilize()

    def do_deliver(self, args: list[str], out: list[str]) -> None:
        _, kv = _kv(args)
        self.cluster.deliver(**_filters(kv))

    def do_drop(self, args: list[str], out: list[str]) -> None:
        _, kv = _kv(args)
        n = self.cluster.drop(**_filters(kv))
        out.append(f"dropped {n}")

    def do_partition(self, args: list[str], out: list[str]) -> None:
        self.cluster.partition(*[_ids(g) for g in args])

    def do_heal(self, args: list[str], out: list[str]) -> None:
        self.cluster.heal()

    def do_hold_disk(self, args: list[str], out: list[str]) -> None:
        self.cluster.hold_disk(args[0])

    def do_persist(self, args: list[str], out: list[str]) -> None:
        self.cluster.persist(args[0])

    def do_crash(self, args: list[str], out: list[str]) -> None:
        self.cluster.held.discard(args[0])
        self.cluster.crash(args[0])

    def do_restart(self, args: list[str], out: list[str]) -> None:
        self.cluster.restart(args[0])

    def do_wipe(self, args: list[str], out: list[str]) -> None:
        c, nid = self.cluster, args[0]
        c.held.discard(nid)
        c.crash(nid)
        c.initial[nid] = InitialState()
        disk = c.disks[nid]
        disk.entries.clear()
        disk.hard_state = InitialState().hard_state
        disk.snapshot = None
        c.restart(nid)

    def do_status(self, args: list[str], out: list[str]) -> None:
        c = self.cluster
        for nid in args or sorted(c.nodes):
            if nid in c.crashed:
                out.append(f"{nid}: down")
                continue
            st = c.status(nid)
            out.append(
                f"{nid}: {st.role.value} term={st.term} vote={st.vote} leader={st.leader} "
                f"last={st.last_index}/{st.last_term} commit={st.commit} applied={st.applied} "
                f"persisted={st.persisted} conf({fmt_membership(st.membership)})"
            )
            for p in st.peers:
                out.append(f"  {p.id}: match={p.match} next={p.next} {p.state}")

    def do_log(self, args: list[str], out: list[str]) -> None:
        c = self.cluster
        nid = args[0]
        st = c.status(nid)
        node = c.nodes[nid]
        for index in range(st.first_index, st.last_index + 1):
            out.append("  " + fmt_entry(node._log.entry(index)))

    def do_applied(self, args: list[str], out: list[str]) -> None:
        out.append(" ".join(fmt_entry(e) for e in self.cluster.applied[args[0]]) or "(none)")

    def do_reads(self, args: list[str], out: list[str]) -> None:
        c, nid = self.cluster, args[0]
        seen = self.read_seen.get(nid, 0)
        for r in c.reads[nid][seen:]:
            out.append(f"read {r.ctx} at index {r.index}")
        self.read_seen[nid] = len(c.reads[nid])
        for ctx in c.dropped_reads[nid]:
            out.append(f"dropped read {ctx}")
        c.dropped_reads[nid].clear()

    def do_stash(self, args: list[str], out: list[str]) -> None:
        """Take the matching messages out of the network (a long delay); ``unstash`` puts
        them back, to be delivered after everything that happened meanwhile."""
        _, kv = _kv(args)
        f = _filters(kv)
        c = self.cluster
        keep = [m for m in c.network if not _match(m, f)]
        taken = [m for m in c.network if _match(m, f)]
        c.network[:] = keep
        self.stashed.extend(taken)
        out.extend("  stashed " + fmt_message(m) for m in taken)

    def do_unstash(self, args: list[str], out: list[str]) -> None:
        self.cluster.network.extend(self.stashed)
        self.stashed = []

    def do_network(self, args: list[str], out: list[str]) -> None:
        out.extend("  " + fmt_message(m) for m in self.cluster.network)


# ---- files ------------------------------------------------------------------------------------


def parse(text: str) -> list[tuple[list[str], str, list[str]]]:
    """Blocks of (leading comment lines, command, expected output lines)."""
    blocks: list[tuple[list[str], str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    comments: list[str] = []
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            comments.append(line)
            i += 1
            continue
        cmd = line
        assert i + 1 < len(lines) and lines[i + 1] == SEP, f"line {i + 2}: expected {SEP!r}"
        i += 2
        expected: list[str] = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        while comments and not comments[0].strip():
            comments.pop(0)
        blocks.append((comments, cmd, expected))
        comments = []
    return blocks


def render(blocks: list[tuple[list[str], str, list[str]]]) -> str:
    parts = []
    for comments, cmd, out in blocks:
        parts.append("\n".join([*comments, cmd, SEP, *out]))
    return "\n\n".join(parts) + "\n"


def run_file(path: pathlib.Path) -> tuple[str, str]:
    """(expected text, actual text) of one file."""
    text = path.read_text()
    blocks = parse(text)
    runner = Runner()
    actual = []
    stopped = False
    for comments, cmd, _ in blocks:
        if stopped:
            out = ["(not run: a violation stopped the transcript)"]
        else:
            try:
                out = runner.run(cmd)
            except AssertionError as exc:
                out = [
                    *(runner.c.out if runner.c else []),
                    f"violation: {str(exc).splitlines()[0]}",
                ]
                stopped = True
        if len(out) > MAX_LINES:  # a livelock prints thousands of deliveries: keep the start
            more = len(out) - MAX_LINES + 1
            out = [*out[: MAX_LINES - 2], f"  ... ({more} more lines)", out[-1]]
        actual.append((comments, cmd, out))
    return render(blocks), render(actual)
