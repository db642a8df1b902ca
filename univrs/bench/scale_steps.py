"""The steps of the cluster bench, one function each, numbered as in the docstring of
``univrs.bench.scale_cluster`` (which runs them in turn, ``run_cluster``):

1. seed: ``write_backup`` (the snapshot as a backup file) and ``restore_members``
   (``univrs snapshot restore`` into every member's data dir);
2. ``measure_load``: writes, pages and the apply rate under the 64-writer load;
3. ``measure_snapshot_pause`` (and ``measure_snapshot_rounds``, the same alone, repeated):
   the longest acknowledgement gap while the leader takes a snapshot;
4. ``measure_restart``: a follower stopped and started, to its first linearizable read;
5. ``measure_join``: a fourth member joins, to a voter at the leader's applied index;
6. ``measure_digests``: every member's state digest at one applied index;
7. ``measure_peak_rss``: every node process's ``VmHWM``.

Each returns its figures as a dict (the keys of the JSON the bench prints) and takes every
deadline from the run's ``Budget``. ``NODE_CONFIG`` is the configuration the steps assume.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
import subprocess
import sys
import time
import urllib.request
from typing import Any

import trio

from univrs import __version__
from univrs.bench.nodes import parse_metrics
from univrs.bench.scale_load import Load, longest_gap, percentile
from univrs.bench.scale_probes import (
    Budget,
    highest_term,
    http,
    linearizable_read,
    log_field,
    log_lines,
    vm_status,
    wait_leader,
)
from univrs.raft.messages import Membership
from univrs.storage.backup import BackupHeader, stream_chunks
from univrs.tools.devcluster import LocalCluster, NodeProc

__all__ = [
    "HEARTBEAT_MS",
    "NODE_CONFIG",
    "measure_digests",
    "measure_join",
    "measure_load",
    "measure_peak_rss",
    "measure_restart",
    "measure_snapshot_pause",
    "measure_snapshot_rounds",
    "restore_members",
    "write_backup",
]

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
TOKEN = "bench-scale"  # --initial-cluster-token of the restored cluster


# ------------------------------------------------------------------ 1. seed


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


# ------------------------------------------------------------------ 2. load

_READ_BUCKET = 'univrs_api_read_seconds_bucket{le="'


def read_histogram(node: NodeProc) -> dict[float, float] | None:
    """``node``'s read-latency histogram (cumulative counts by upper bound, seconds) from its
    ``/metrics``; None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{node.api_addr}/metrics", timeout=5) as resp:
            sample = parse_metrics(resp.read().decode())
    except (OSError, ValueError):
        return None
    return {
        float(key[len(_READ_BUCKET) : -2]): value
        for key, value in sample.items()
        if key.startswith(_READ_BUCKET)
    }


def bucket_quantile(cumulative: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of a cumulative histogram."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    total = cumulative[bounds[-1]]  # the +Inf bucket
    for le in bounds:
        if cumulative[le] >= q * total:
            return le
    return None


def measure_load(
    leader: NodeProc, endpoints: list[str], n: int, seconds: float, reader: str = "loop"
) -> dict[str, Any]:
    """The writers and the page reader for ``seconds``: writes and applies per second, page
    latency p50 / p99, errors. ``reader="thread"``: the reader on its own loop and thread,
    taking in turn linearizable pages, local pages (``page_local_p50_s`` / ``_p99_s``)
    and local reads of one workload (``get_local_p50_s`` / ``_p99_s``)."""
    out: dict[str, Any] = {}
    load = Load(endpoints=endpoints, n=n)

    def applied() -> int:
        return int((leader.status() or {}).get("applied_index", 0))

    reads_before = read_histogram(leader)
    whole = trio.run(lambda: load.run(seconds, reader=reader, applied=applied))
    reads_after = read_histogram(leader)
    if reads_before is not None and reads_after is not None:
        # The leader's own time per read (frame taken to answered: barrier and render, not
        # the websocket's receive and send), as the upper bound of its histogram's bucket.
        diff = {le: reads_after[le] - reads_before.get(le, 0.0) for le in reads_after}
        out["leader_read_p50_le_s"] = bucket_quantile(diff, 0.5)
        out["leader_read_p99_le_s"] = bucket_quantile(diff, 0.99)
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
    if load.local_pages:
        out["page_local_count"] = len(load.local_pages)
        out["page_local_p50_s"] = _round(percentile(load.local_pages, 0.5), 4)
        out["page_local_p99_s"] = _round(percentile(load.local_pages, 0.99), 4)
    if load.local_gets:
        out["get_local_count"] = len(load.local_gets)
        out["get_local_p50_s"] = _round(percentile(load.local_gets, 0.5), 4)
        out["get_local_p99_s"] = _round(percentile(load.local_gets, 0.99), 4)
    if load.errors or load.page_errors:
        out["first_error"] = (load.errors + load.page_errors)[0]
    return out


# ------------------------------------------------------------------ 3. snapshot pause


def measure_snapshot_pause(
    leader: NodeProc, members: list[NodeProc], endpoints: list[str], n: int, clock: Budget
) -> dict[str, Any]:
    """A snapshot asked of ``leader`` in the middle of the write load: its length, the
    longest acknowledgement gap across it (and just before it), the elections it caused."""
    before = highest_term(members)
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
    trio.run(lambda: load.run(SNAPSHOT_LEAD, reader=None, during=take, stall_grace=timeout))
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
        "elections_during_snapshot": highest_term(members) - before,
    }


def measure_snapshot_rounds(
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
        leader = wait_leader(cluster, members, clock)
        print(f"snapshot round on {leader.node_id} (pid {leader.pid})", file=sys.stderr, flush=True)
        each.append(measure_snapshot_pause(leader, members, endpoints, n, clock))

    def median(key: str) -> float | None:
        values = sorted(r[key] for r in each if r.get(key) is not None)
        return values[len(values) // 2] if values else None

    keys = ("snapshot_s", "snapshot_node_s", "snapshot_ack_gap_s", "baseline_ack_gap_s")
    return {
        "snapshot_rounds": each,
        **{f"median_{k}": median(k) for k in (*keys, "elections_during_snapshot")},
    }


# ------------------------------------------------------------------ 4. restart


def measure_restart(
    cluster: LocalCluster, follower: NodeProc, n: int, clock: Budget
) -> dict[str, Any]:
    """``follower`` stopped and started: from the start of its new process to its first
    linearizable read (polled every 20 ms), and that process's peak RSS."""
    cluster.stop(follower)
    t0 = time.perf_counter()
    cluster.start(follower)
    probe = f"wl-{n // 2:08d}"
    clock.wait(3600, "the restarted follower's read", lambda: linearizable_read(follower, probe))
    return {
        "restart_to_read_s": round(time.perf_counter() - t0, 3),
        "restart_peak_rss_bytes": vm_status(follower.pid, "VmHWM"),
    }


# ------------------------------------------------------------------ 5. join


def measure_join(
    cluster: LocalCluster,
    leader: NodeProc,
    members: list[NodeProc],
    joiner: NodeProc,
    clock: Budget,
) -> dict[str, Any]:
    """``joiner`` started with ``--join``: from the start of its process to a voter that
    applied the leader's index; the elections meanwhile (every member's term polled), the
    longest stretch its ``/livez`` did not answer, and the parts of the snapshot's install
    its log tells."""
    terms = {m.node_id: (m.status() or {}).get("term", 0) for m in members}
    first_term = max(terms.values())
    target = (leader.status() or {}).get("applied_index", 0)
    highest = [first_term]

    answered: list[float] = []

    def joined() -> bool:
        code, _ = http(joiner, "GET", "/livez", 1.0)
        if code == 200:
            answered.append(time.perf_counter())
        for node in [*members, joiner]:
            view = node.status()
            if view:
                highest[0] = max(highest[0], view["term"])
        lead, mine = leader.status(), joiner.status()
        return bool(
            lead
            and mine
            and joiner.node_id in lead.get("voters", [])
            and mine["applied_index"] >= target
        )

    t0, since = time.perf_counter(), time.time()
    cluster.start(joiner, join=leader.api_addr)
    clock.wait(3600, "the fourth member to join", joined)
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


# ------------------------------------------------------------------ 6. digests


def measure_digests(nodes: list[NodeProc], leader: NodeProc, clock: Budget) -> dict[str, Any]:
    """Every node's ``/v1/node/digest`` at one applied index (writes stopped): all equal, and
    the last node's (the joined member's) equal to the leader's."""

    def same_applied() -> dict[str, Any] | None:
        views = [node.status() for node in nodes]
        applied = {v["applied_index"] for v in views if v}
        return {"applied": applied.pop()} if len(applied) == 1 and all(views) else None

    digests: dict[str, tuple[int, str]] = {}
    for _ in range(DIGEST_ROUNDS):  # an entry may apply between two nodes' answers: again
        clock.wait(600, "every member at the same applied index", same_applied)
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


# ------------------------------------------------------------------ 7. peak RSS


def measure_peak_rss(nodes: list[NodeProc]) -> dict[str, Any]:
    """Every node process's peak resident set (``VmHWM``) and the largest of them."""
    out: dict[str, Any] = {
        f"peak_rss_bytes_{node.node_id}": vm_status(node.pid, "VmHWM") for node in nodes
    }
    out["peak_rss_bytes_max"] = max((v for v in out.values() if v), default=None)
    return out


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


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
