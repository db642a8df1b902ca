"""What the nodes say about a bench measurement: who led, and how reads shared confirmations.

For a cluster it started, the bench scrapes each node's ``/metrics`` (its REST address) at the
start and the end of every measured window (``Servers.snapshot``) and ``window_figures``
compares the two:

* ``leader``: the node whose ``univrs_raft_is_leader`` was 1 at the end (the node labelled
  "(leader)" in the CPU figures), ``leader_changes``: how many times any node saw the leader
  change in the window (``univrs_raft_leader_changes_total``), ``leader_at_start`` when it
  differs;
* ``reads_per_confirmation``: linearizable reads served (``univrs_api_requests_total`` of
  ``workload.get``, outcome ok) per ReadIndex confirmation requested
  (``univrs_api_read_confirmations_total``: one ``read_index`` call of a node's
  ``ReadCoalescer``, which every read waiting at that moment shares), over the whole cluster
  and per node. A follower's confirmation is one ReadIndex request to the leader, which folds
  the requests that arrive before its next heartbeat round into that round, so the leader's
  heartbeat rounds are at most this many. Lease reads take their confirmations from another
  coalescer that the metric does not count: their phase gets no ratio.
* ``gc_ms`` and ``gc_full``: per node, the cyclic garbage collector's pause time in the window
  (``univrs_gc_pause_seconds_total``, all generations, in ms) and its full (generation-2)
  collections (``univrs_gc_collections_total``): the collector's share of a node's CPU.
* ``proposals_per_batch``: proposals appended per ``propose_many`` on the nodes in the window
  (``univrs_api_batched_proposals_total`` / ``univrs_api_proposal_batches_total``, summed: the
  leader's), and ``syncs``: per node, synced log writes (fsyncs) in the window
  (``univrs_storage_syncs_total``). Much of a write's cost is paid per batch (an append, an
  fsync and a round of messages on every node), so the CPU per write depends on the batch size.
"""

from __future__ import annotations

import re
import urllib.request
from typing import Any

import attrs
import trio

__all__ = ["Servers", "parse_metrics", "window_figures"]

READ_OPS = ("workload.get",)
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {"name{labels}": value} (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        try:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        except ValueError:
            continue
    return out


def _reads(sample: dict[str, float]) -> float:
    return sum(
        sample.get(f'univrs_api_requests_total{{op="{op}",outcome="ok"}}', 0.0) for op in READ_OPS
    )


def _gc_seconds(sample: dict[str, float]) -> float:
    return sum(
        sample.get(f'univrs_gc_pause_seconds_total{{generation="{g}"}}', 0.0) for g in range(3)
    )


def _gc_full(sample: dict[str, float]) -> float:
    return sample.get('univrs_gc_collections_total{generation="2"}', 0.0)


def _delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def _leader(snapshot: dict[str, dict[str, float]]) -> str | None:
    leaders = [n for n, s in snapshot.items() if s.get("univrs_raft_is_leader", 0.0) == 1.0]
    return leaders[0] if len(leaders) == 1 else None


def window_figures(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """The figures of one window from the nodes' metrics at its start and end (nodes that did
    not answer both times are left out)."""
    nodes = sorted(set(before) & set(after))
    out: dict[str, Any] = {"leader": _leader(after)}
    start = _leader(before)
    if start != out["leader"]:
        out["leader_at_start"] = start
    out["leader_changes"] = int(
        max(
            (
                after[n].get("univrs_raft_leader_changes_total", 0.0)
                - before[n].get("univrs_raft_leader_changes_total", 0.0)
                for n in nodes
            ),
            default=0.0,
        )
    )
    reads: dict[str, float] = {}
    confirmations: dict[str, float] = {}
    for n in nodes:
        reads[n] = _reads(after[n]) - _reads(before[n])
        confirmations[n] = after[n].get("univrs_api_read_confirmations_total", 0.0) - before[n].get(
            "univrs_api_read_confirmations_total", 0.0
        )
    out["gc_ms"] = {
        n: round(1000 * (_gc_seconds(after[n]) - _gc_seconds(before[n])), 1) for n in nodes
    }
    out["gc_full"] = {n: int(_gc_full(after[n]) - _gc_full(before[n])) for n in nodes}
    batches = sum(_delta(before[n], after[n], "univrs_api_proposal_batches_total") for n in nodes)
    proposed = sum(_delta(before[n], after[n], "univrs_api_batched_proposals_total") for n in nodes)
    out["proposals_per_batch"] = round(proposed / batches, 1) if batches else None
    out["syncs"] = {
        n: int(_delta(before[n], after[n], "univrs_storage_syncs_total")) for n in nodes
    }
    out["reads_served"] = {n: int(v) for n, v in reads.items()}
    out["read_confirmations"] = {n: int(v) for n, v in confirmations.items()}
    total_c = sum(confirmations.values())
    out["reads_per_confirmation"] = round(sum(reads.values()) / total_c, 1) if total_c else None
    out["reads_per_confirmation_by_node"] = {
        n: round(reads[n] / confirmations[n], 1) for n in nodes if confirmations[n]
    }
    return out


@attrs.define(eq=False)
class Servers:
    """The nodes' REST addresses (node id -> host:port) whose metrics are scraped."""

    apis: dict[str, str]
    timeout: float = 2.0

    def _scrape(self, api: str) -> dict[str, float] | None:
        try:
            with urllib.request.urlopen(f"http://{api}/metrics", timeout=self.timeout) as resp:
                return parse_metrics(resp.read().decode())
        except (OSError, ValueError):
            return None

    async def snapshot(self) -> dict[str, dict[str, float]]:
        """Every answering node's metrics, scraped in parallel (threads: urllib blocks)."""
        out: dict[str, dict[str, float]] = {}

        async def one(node: str, api: str) -> None:
            got = await trio.to_thread.run_sync(self._scrape, api)
            if got is not None:
                out[node] = got

        async with trio.open_nursery() as nursery:
            for node, api in self.apis.items():
                nursery.start_soon(one, node, api)
        return out
