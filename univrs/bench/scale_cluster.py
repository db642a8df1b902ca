"""Cluster figures of issue 17: a 3-node cluster of real processes holding a generated state.

``scripts/bench_scale --cluster`` (``run_cluster`` here) seeds a cluster with a snapshot of N
workloads + N instances and measures what the issue asks of it, through the node's own code:

1. **Seed**: the snapshot (the bytes a node stores and sends) is wrapped in a backup file
   (``univrs.storage.backup``) and every member's data dir is built from it by
   ``univrs snapshot restore`` (one process per member, the operator's offline restore,
   which checks that the data restores), then the three nodes start on those data dirs: each
   restores the stored snapshot at start, as after any restart (``cold_start_s``: start of
   the processes to all three ready).
2. **Load** (``--load-seconds``): 64 closed-loop clients scale workloads of the state (keyed
   writes) through the fast protocol while one client pages ``workload.list`` with
   ``limit=100`` from random ``after`` ids (linearizable): page latency p50 / p99 (wall,
   client side), acknowledged writes per second and the leader's apply rate (applied index
   per second).
3. **Snapshot pause**: the same write load; ``POST /v1/cluster/snapshot`` on the leader in the
   middle. The longest gap between two write acknowledgements (all clients merged) while the
   snapshot is taken, against the same figure over an equal window just before, and the
   heartbeat interval: a gap above a heartbeat means the leader's loop stalled.
4. **Restart**: a follower is stopped (SIGTERM) and started again; time from the start of the
   new process to its first successful linearizable read served by that node (REST, polled
   every 20 ms).
5. **Join**: a fourth node starts with ``--join``: it gets the state as a snapshot (the
   restored members' logs begin at the snapshot) plus the log after it. Time from the start
   of its process to being a voter that applied the leader's index; every member's term is
   polled throughout (``elections_during_join``: how far the highest term moved; 0 expected).
6. **Digests**: with writes stopped, every member's ``/v1/node/digest`` at the same applied
   index; the joined member's must equal the leader's.
7. **Peak RSS** of every node process (``VmHWM`` from /proc; the restarted node's is that of
   its new process).

Configuration of the nodes: fsync on (the default), loopback, ports the kernel says are free;
the reconciler and node liveness off (the generated machines never heartbeat, and placing
replicas would be a write storm of its own), automatic snapshots off (the snapshot of step 3
is taken on request). Every wait has a deadline drawn from ``budget`` seconds for the whole
run; the processes are stopped by PID whatever happens.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import itertools
import json
import pathlib
import random
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import trio

from univrs import __version__
from univrs.raft.messages import Membership
from univrs.storage.backup import BackupHeader, stream_chunks
from univrs.tools.devcluster import LocalCluster, NodeProc, wait_for

T = TypeVar("T")

WRITERS = 64  # closed-loop write clients (the "64-client write load")
CONNECTIONS = 8  # client connections the writers share
PAGE_LIMIT = 100
HEARTBEAT_MS = 150  # the nodes' heartbeat_interval_ms (the default, written in their config)
SNAPSHOT_LEAD = 2.0  # seconds of load before the snapshot is asked for
SNAPSHOT_TAIL = 1.0  # seconds of load after it was taken
NODE_CONFIG = (
    f"heartbeat_interval_ms = {HEARTBEAT_MS}\n"
    "node_ttl_ms = 0\n"
    "reconcile_resync_ms = 0\n"
    "snapshot_threshold = 1000000000\n"
)
DIGEST_ROUNDS = 5  # tries to read every member's digest at one applied index
LIVEZ_EVERY = 0.05  # seconds between two /livez probes of the joining node
TOKEN = "bench-scale"  # --initial-cluster-token of the restored cluster


class OutOfBudget(TimeoutError):
    """The run's time budget is spent."""


@attrs.define
class Budget:
    """The time left for a whole run: every wait takes its deadline from it."""

    seconds: float
    started: float = attrs.field(factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def timeout(self, cap: float, what: str) -> float:
        """``cap`` seconds, or what is left if less; ``OutOfBudget`` when nothing is left."""
        left = self.left()
        if left <= 0:
            raise OutOfBudget(f"the budget of {self.seconds:g} s was spent before {what}")
        return min(cap, left)


def write_backup(data: bytes, *, index: int, term: int, path: pathlib.Path) -> None:
    """``data`` (a state-machine snapshot at ``index``, ``term``) as a backup file, as
    ``univrs snapshot save`` writes them."""
    header = BackupHeader(
        cluster_id="bench-scale-generator",
        index=index,
        term=term,
        membership=Membership(voters=frozenset({"generator"})),
        node="generator",
        created_ms=int(time.time() * 1000),
        size=len(data),
        version=__version__,
    )
    with open(path, "wb") as f:
        for chunk in stream_chunks(header, data):
            f.write(chunk)


def vm_status(pid: int | None, field: str) -> int | None:
    """A process's ``VmHWM`` (peak resident set) or ``VmRSS`` in bytes, None if unreadable."""
    if pid is None:
        return None
    try:
        text = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None


def http(node: NodeProc, method: str, path: str, timeout: float) -> tuple[int, Any]:
    """(status, JSON body) of one request to ``node``'s REST API; (0, reason) when it does
    not answer."""
    request = urllib.request.Request(
        f"http://{node.api_addr}{path}",
        method=method,
        data=b"{}" if method == "POST" else None,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.load(exc)
        except ValueError:
            return exc.code, None
    except (OSError, ValueError) as exc:
        return 0, str(exc)


def linearizable_read(node: NodeProc, ident: str) -> bool:
    """Does ``node`` itself serve a linearizable read of workload ``ident`` now?"""
    code, body = http(node, "GET", f"/v1/workloads/{ident}?consistency=linearizable", 2.0)
    return code == 200 and isinstance(body, dict) and body.get("id") == ident


def log_field(node: NodeProc, event: str, field: str) -> Any:
    """``field`` of the last ``event`` line of the node's log (the structured one-line logs)."""
    try:
        text = node.log_path.read_text(errors="replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        if f'"{event}"' in line or f"msg={event}" in line or event in line:
            try:
                doc = json.loads(line[line.index("{") :])
                if isinstance(doc, dict) and field in doc:
                    return doc[field]
            except ValueError:
                pass
            m = re.search(rf"\b{field}=([^\s,]+)", line)
            if m:
                return m.group(1)
    return None


def log_lines(node: NodeProc, text: str, since: float = 0.0) -> list[tuple[float, str]]:
    """(time, line) of every line of the node's log that contains ``text``, written at or
    after ``since`` (epoch seconds; the line's own UTC timestamp)."""
    try:
        lines = node.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        if text not in line:
            continue
        try:
            when = datetime.datetime.fromisoformat(line[:23]).replace(tzinfo=datetime.UTC)
        except ValueError:
            continue
        if when.timestamp() >= since:
            found.append((when.timestamp(), line))
    return found


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile ``q`` of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def longest_gap(times: list[float], start: float, end: float) -> float | None:
    """The longest time between two consecutive acknowledgements around ``[start, end]``:
    from the last one before ``start`` to the first one after ``end`` (so a stall over the
    whole window counts whole)."""
    ordered = sorted(times)
    before = [t for t in ordered if t < start]
    inside = [t for t in ordered if start <= t <= end]
    after = [t for t in ordered if t > end]
    points = before[-1:] + inside + after[:1]
    if len(points) < 2:
        return None
    return max(b - a for a, b in itertools.pairwise(points))


@attrs.define
class Load:
    """The write load and the page reader of one measured window."""

    endpoints: list[str]
    n: int
    acks: list[float] = attrs.field(factory=list)
    pages: list[float] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)
    page_errors: list[str] = attrs.field(factory=list)
    # The measured window (perf_counter) and the leader's applied index at its ends.
    window: list[float] = attrs.field(factory=list)
    applied: list[int] = attrs.field(factory=list)

    async def run(
        self,
        seconds: float,
        *,
        reader: bool,
        during: Callable[[], Any] | None = None,
        applied: Callable[[], int] | None = None,
        stall_grace: float = 60.0,
    ) -> bool:
        """Load for ``seconds`` once the clients are connected (``during``, an async function,
        runs then; the load lasts until it returned; ``applied``, the leader's applied index,
        is read at both ends of the window); False if it had to be abandoned (stalled)."""
        from contextlib import AsyncExitStack

        from univrs.client import open_client
        from univrs.errors import UnivrsError

        stop = [False]
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(open_client(self.endpoints, timeout=30))
                for _ in range(CONNECTIONS)
            ]
            page_client = await stack.enter_async_context(open_client(self.endpoints, timeout=30))

            async def writer(i: int) -> None:
                client = clients[i % len(clients)]
                k = i
                while not stop[0]:
                    k = (k + 7919) % self.n
                    try:
                        await client.scale_workload(f"wl-{k:08d}", k % 5)
                    except UnivrsError as exc:
                        self.errors.append(f"{exc.code}: {exc.message}")
                        continue
                    self.acks.append(time.perf_counter())

            async def page_reader() -> None:
                rng = random.Random(17)
                while not stop[0]:
                    after = f"wl-{rng.randrange(max(1, self.n - PAGE_LIMIT)):08d}"
                    t0 = time.perf_counter()
                    try:
                        page = await page_client.list_workloads(limit=PAGE_LIMIT, after=after)
                    except UnivrsError as exc:
                        self.page_errors.append(f"{exc.code}: {exc.message}")
                        continue
                    self.pages.append(time.perf_counter() - t0)
                    if not page["items"]:
                        self.page_errors.append(f"empty page after {after}")

            async def timer() -> None:
                if applied is not None:
                    self.applied.append(await trio.to_thread.run_sync(applied))
                self.window.append(time.perf_counter())
                await trio.sleep(seconds)  # the measured window (a duration, not a sync)
                if during is not None:
                    await during()
                stop[0] = True
                self.window.append(time.perf_counter())
                if applied is not None:
                    self.applied.append(await trio.to_thread.run_sync(applied))

            with trio.move_on_after(seconds + stall_grace) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(timer)
                    for i in range(WRITERS):
                        nursery.start_soon(writer, i)
                    if reader:
                        nursery.start_soon(page_reader)
            return not scope.cancelled_caught


def _status(node: NodeProc) -> dict[str, Any] | None:
    return node.status()


def _wait(budget: Budget, cap: float, what: str, probe: Callable[[], T | None]) -> T:
    return wait_for(probe, budget.timeout(cap, what), what, every=0.02)


def restore_members(
    cluster: LocalCluster, backup: pathlib.Path, budget: Budget, backend: str = "lmdb"
) -> list[float]:
    """``univrs snapshot restore`` into every member's data dir (one process each, in turn;
    with ``backend`` lmdb it builds the state env too); the seconds each took."""
    members = [n for n in cluster.nodes if n.node_id not in cluster.spares]
    raft = ",".join(f"{n.node_id}={n.raft_addr}" for n in members)
    apis = ",".join(f"{n.node_id}={n.api_addr}" for n in members)
    took = []
    for n in members:
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "univrs", "snapshot", "restore", str(backup),
             "--data-dir", str(n.data_dir), "--node-id", n.node_id,
             "--initial-cluster", raft, "--initial-cluster-api", apis,
             "--initial-cluster-token", TOKEN, "--state-backend", backend],
            capture_output=True,
            text=True,
            timeout=budget.timeout(3600, f"the restore of {n.node_id}"),
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"univrs snapshot restore {n.node_id} failed: {done.stderr[-2000:]}")
        took.append(time.perf_counter() - t0)
    return took


def run_cluster(
    data: bytes,
    *,
    index: int,
    term: int,
    n: int,
    folder: pathlib.Path,
    budget: float,
    load_seconds: float = 10.0,
    backend: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
    snapshot_rounds: int = 0,
) -> dict[str, Any]:
    """Every cluster figure (see the module docstring) for the snapshot ``data`` of a state of
    ``n`` workloads + ``n`` instances at ``index``/``term``. Returns what was measured; on a
    failure or a spent budget the figures so far and ``error``."""
    clock = Budget(budget)
    out: dict[str, Any] = {"cluster_objects_workloads": n, "cluster_objects_instances": n}
    extra = NODE_CONFIG + (f'[state]\nbackend = "{backend}"\n' if backend else "")
    cluster = LocalCluster.with_free_ports(folder, size=3, spares=1, extra_config=extra)
    cluster.bootstrap = False  # the restored data dirs hold the membership
    cluster.write_configs()
    members, joiner = cluster.nodes[:3], cluster.nodes[3]
    try:
        backup = folder / "seed.snap"
        write_backup(data, index=index, term=term, path=backup)
        progress("restoring the members' data dirs")
        took = restore_members(cluster, backup, clock, backend or "lmdb")
        backup.unlink()
        out["offline_restore_s"] = round(max(took), 3)
        progress("starting the 3 members")
        t0 = time.perf_counter()
        for node in members:
            cluster.start(node)
        cluster.wait_ready(members, clock.timeout(3600, "the members to be ready"))
        out["cold_start_s"] = round(time.perf_counter() - t0, 3)
        leader = wait_for(
            lambda: cluster.leader(members), clock.timeout(120, "a leader"), "a leader"
        )
        endpoints = [m.raft_addr for m in members]
        first_term = _highest_term(members)
        if snapshot_rounds > 0:  # the snapshot pause only, ``snapshot_rounds`` times
            out.update(_snapshot_rounds(cluster, members, endpoints, n, clock, snapshot_rounds))
            return out

        progress(f"{WRITERS} writers and a page reader for {load_seconds:g} s")
        load = Load(endpoints=endpoints, n=n)

        def applied() -> int:
            return int((_status(leader) or {}).get("applied_index", 0))

        whole = trio.run(lambda: load.run(load_seconds, reader=True, applied=applied))
        out["load_stalled"] = not whole
        if len(load.window) == 2 and len(load.applied) == 2:
            start, end = load.window
            elapsed = end - start
            acked = sum(1 for t in load.acks if start <= t <= end)
            out["load_seconds"] = round(elapsed, 2)
            out["writes_per_s"] = round(acked / elapsed, 1)
            out["apply_rate_per_s"] = round((load.applied[1] - load.applied[0]) / elapsed, 1)
        out["write_errors"] = len(load.errors)
        out["page_count"] = len(load.pages)
        out["page_p50_s"] = _round(percentile(load.pages, 0.5), 4)
        out["page_p99_s"] = _round(percentile(load.pages, 0.99), 4)
        out["page_errors"] = len(load.page_errors)
        if load.errors or load.page_errors:
            out["first_error"] = (load.errors + load.page_errors)[0]

        progress("a snapshot under the write load")
        before_snapshot = _highest_term(members)
        out.update(_snapshot_pause(leader, endpoints, n, clock))
        out["elections_during_snapshot"] = _highest_term(members) - before_snapshot
        leader = wait_for(
            lambda: cluster.leader(members), clock.timeout(120, "a leader"), "a leader"
        )

        progress("restarting a follower")
        follower = next(m for m in members if m is not leader)
        cluster.stop(follower)
        t0 = time.perf_counter()
        cluster.start(follower)
        probe = f"wl-{n // 2:08d}"
        _wait(
            clock, 3600, "the restarted follower's read", lambda: linearizable_read(follower, probe)
        )
        out["restart_to_read_s"] = round(time.perf_counter() - t0, 3)
        out["restart_peak_rss_bytes"] = vm_status(follower.pid, "VmHWM")

        progress("a fourth member joins")
        out.update(measure_join(cluster, leader, members, joiner, clock))

        out["elections_before_digests"] = _highest_term([*members, joiner]) - first_term
        progress("digests")
        out.update(_digests([*members, joiner], leader, clock))
        for node in [*members, joiner]:
            out[f"peak_rss_bytes_{node.node_id}"] = vm_status(node.pid, "VmHWM")
        out["peak_rss_bytes_max"] = max(
            (v for k, v in out.items() if k.startswith("peak_rss_bytes_n") and v), default=None
        )
    except (TimeoutError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        cluster.stop_all()
    out["budget_left_s"] = round(clock.left(), 1)
    return out


def _highest_term(nodes: list[NodeProc]) -> int:
    return max(int((v or {}).get("term", 0)) for v in map(_status, nodes))


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _snapshot_pause(
    leader: NodeProc, endpoints: list[str], n: int, clock: Budget
) -> dict[str, Any]:
    marks: dict[str, float] = {}
    answer: list[Any] = []
    timeout = clock.timeout(3600, "the snapshot")

    async def take() -> None:
        marks["start"] = time.perf_counter()
        answer.append(
            await trio.to_thread.run_sync(
                lambda: http(leader, "POST", "/v1/cluster/snapshot", timeout)
            )
        )
        marks["end"] = time.perf_counter()
        await trio.sleep(SNAPSHOT_TAIL)  # load after it (a duration, not a sync)

    load = Load(endpoints=endpoints, n=n)
    trio.run(lambda: load.run(SNAPSHOT_LEAD, reader=False, during=take, stall_grace=timeout))
    code, body = answer[0] if answer else (0, "not asked")
    if code != 200:
        raise RuntimeError(f"the snapshot failed: {code} {body}")
    start, end = marks["start"], marks["end"]
    length = end - start
    gap = longest_gap(load.acks, start, end)
    baseline = longest_gap(load.acks, start - min(length, SNAPSHOT_LEAD - 0.5), start)
    return {
        "snapshot_s": round(length, 3),
        "snapshot_node_s": _float(log_field(leader, "snapshot taken", "seconds")),
        "snapshot_bytes": _int(log_field(leader, "snapshot taken", "bytes")),
        "snapshot_ack_gap_s": _round(gap, 4),
        "baseline_ack_gap_s": _round(baseline, 4),
        "heartbeat_s": HEARTBEAT_MS / 1000,
        "snapshot_write_errors": len(load.errors),
    }


def _snapshot_rounds(
    cluster: LocalCluster,
    members: list[NodeProc],
    endpoints: list[str],
    n: int,
    clock: Budget,
    rounds: int,
) -> dict[str, Any]:
    """Step 3 (the snapshot pause) ``rounds`` times on a cluster that did nothing else, each
    on the leader of the moment: every round's figures and the medians."""
    each: list[dict[str, Any]] = []
    for _ in range(rounds):
        leader = wait_for(
            lambda: cluster.leader(members), clock.timeout(120, "a leader"), "a leader"
        )
        print(f"snapshot round on {leader.node_id} (pid {leader.pid})", file=sys.stderr, flush=True)
        before = _highest_term(members)
        row = _snapshot_pause(leader, endpoints, n, clock)
        row["elections_during_snapshot"] = _highest_term(members) - before
        each.append(row)

    def median(key: str) -> float | None:
        values = sorted(r[key] for r in each if r.get(key) is not None)
        return values[len(values) // 2] if values else None

    keys = ("snapshot_s", "snapshot_node_s", "snapshot_ack_gap_s", "baseline_ack_gap_s")
    return {
        "snapshot_rounds": each,
        **{f"median_{k}": median(k) for k in (*keys, "elections_during_snapshot")},
    }


def measure_join(
    cluster: LocalCluster,
    leader: NodeProc,
    members: list[NodeProc],
    joiner: NodeProc,
    clock: Budget,
) -> dict[str, Any]:
    terms = {m.node_id: (_status(m) or {}).get("term", 0) for m in members}
    first_term = max(terms.values())
    target = (_status(leader) or {}).get("applied_index", 0)
    highest = [first_term]

    answered: list[float] = []

    def joined() -> bool:
        code, _ = http(joiner, "GET", "/livez", 1.0)
        if code == 200:
            answered.append(time.perf_counter())
        for node in [*members, joiner]:
            view = _status(node)
            if view:
                highest[0] = max(highest[0], view["term"])
        lead, mine = _status(leader), _status(joiner)
        return bool(
            lead
            and mine
            and joiner.node_id in lead.get("voters", [])
            and mine["applied_index"] >= target
        )

    t0, since = time.perf_counter(), time.time()
    cluster.start(joiner, join=leader.api_addr)
    _wait(clock, 3600, "the fourth member to join", joined)
    end = time.perf_counter()
    # The longest time the joining node's event loop did not answer /livez, from its first
    # answer to the end of the join (it cannot answer before it listens).
    stall = longest_gap(answered, answered[0], end) if answered else None
    added = log_lines(joiner, "added as a learner", since)
    received = log_lines(joiner, '"snapshot received"', since)
    stream = received[0][0] - added[-1][0] if added and received else None
    return {
        "join_s": round(end - t0, 3),
        "join_loop_stall_s": _round(stall, 3),
        "elections_during_join": highest[0] - first_term,
        # "added as a learner" to "snapshot received" (the leader's stream), the check (the
        # staging of the state), the install on the apply loop (the durable wait, the swap).
        "join_stream_s": _round(stream, 3),
        "join_check_s": _float(log_field(joiner, "snapshot checked", "seconds")),
        "join_install_s": _float(log_field(joiner, "snapshot installed", "seconds")),
        # The members' links to the joining node dropped for want of a pong (its loop stalled
        # for over a second: ``TransportSettings.ping_timeout``).
        "join_links_lost": sum(
            len(log_lines(m, f"lost connection to {joiner.node_id}: no pong", since))
            for m in members
        ),
    }


def _digests(nodes: list[NodeProc], leader: NodeProc, clock: Budget) -> dict[str, Any]:
    def same_applied() -> dict[str, Any] | None:
        views = [_status(node) for node in nodes]
        applied = {v["applied_index"] for v in views if v}
        return {"applied": applied.pop()} if len(applied) == 1 and all(views) else None

    digests: dict[str, tuple[int, str]] = {}
    for _ in range(DIGEST_ROUNDS):  # an entry may apply between two nodes' answers: again
        _wait(clock, 600, "every member at the same applied index", same_applied)
        timeout = clock.timeout(600, "the digests")
        # All at once: a node computes its digest on its event loop (seconds at 10^6
        # objects); asked one after another, the stalls elect new leaders whose first entry
        # moves the applied index between two answers.
        with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
            answers = list(
                pool.map(lambda node, t=timeout: http(node, "GET", "/v1/node/digest", t), nodes)
            )
        for node, (code, body) in zip(nodes, answers, strict=True):
            if code != 200:
                raise RuntimeError(f"{node.node_id}: /v1/node/digest answered {code} {body}")
            digests[node.node_id] = (body["applied_index"], body["state_digest"])
        if len({applied for applied, _ in digests.values()}) == 1:
            break
    return {
        "digests_equal": len(set(digests.values())) == 1,
        "joined_digest_equals_leader": digests[nodes[-1].node_id] == digests[leader.node_id],
        "digest_applied_index": digests[leader.node_id][0],
        "digests": {k: f"{a} {d[:19]}" for k, (a, d) in digests.items()},
    }


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
