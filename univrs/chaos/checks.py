"""The checks after healing: replicas converge, acknowledged writes survive, nobody died.

* ``wait_converged``: every node answers ``/v1/node/digest`` with the same applied index (and
  the same again a moment later: the cluster is quiet), then the state digests must be equal;
* ``compare_logs``: the digest of the log entries over the range every node still stores, up
  to the smallest applied index, must be equal everywhere (the same applied prefix);
* ``lost_writes``: an acknowledged write is *lost* when the final read shows a value whose
  every writer had already returned before that write was invoked (or absent, when no delete
  could have come after it): then no linearization can put the observed value last. The
  linearizability checker finds these too; this names them plainly;
* ``dead_nodes``: nodes that are not running after healing, or whose log shows a crash;
* ``log_errors``: error-level lines of the node logs (reported, not a verdict by themselves).
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import attrs
import trio

from univrs.chaos.history import EventType, Fn, Operation
from univrs.chaos.monitor import fetch_json
from univrs.tools.devcluster import LocalCluster

CRASH_MARKER = '"node crashed"'  # univrs.cli logs this (critical) when a node dies of a bug
ERROR_LEVELS = (" error ", " critical ")


@attrs.frozen(kw_only=True)
class Convergence:
    """The result of waiting for the replicas to agree."""

    converged: bool  # every node answered with the same applied index
    same_state: bool
    same_log: bool
    applied_index: int | None
    views: tuple[tuple[str, Any], ...]  # node -> its /v1/node/digest document (or None)
    detail: str = ""


async def _digest(addr: str, query: str = "") -> Any:
    return await fetch_json(addr, "/v1/node/digest" + query, timeout=2.0)


async def _all(api: dict[str, str], query: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def one(node: str, addr: str) -> None:
        out[node] = await _digest(addr, query)

    async with trio.open_nursery() as nursery:
        for node, addr in api.items():
            nursery.start_soon(one, node, addr)
    return out


async def wait_converged(api: dict[str, str], timeout: float = 30.0) -> Convergence:
    """Poll until all nodes report the same applied index twice in a row, then compare."""
    views: dict[str, Any] = {}
    previous: int | None = None
    stable = False
    with trio.move_on_after(timeout):
        while True:
            views = await _all(api)
            applied = {v["applied_index"] if v else None for v in views.values()}
            if len(applied) == 1 and None not in applied:
                (index,) = applied
                if index == previous:
                    stable = True
                    break
                previous = index
            else:
                previous = None
            await trio.sleep(0.3)
    plain = tuple(sorted(views.items()))
    if not stable:
        where = ", ".join(
            f"{n}: {v['applied_index'] if v else 'no answer'}" for n, v in sorted(views.items())
        )
        return Convergence(
            converged=False,
            same_state=False,
            same_log=False,
            applied_index=None,
            views=plain,
            detail=f"applied indexes did not converge within {timeout:g}s ({where})",
        )
    digests = {v["state_digest"] for v in views.values()}
    same_state = len(digests) == 1
    same_log, log_detail = await compare_logs(api, views)
    detail = (
        ""
        if same_state
        else "state digests differ: "
        + ", ".join(f"{n}={v['state_digest'][:19]}" for n, v in sorted(views.items()))
    )
    if not same_log:
        detail = (detail + "; " if detail else "") + log_detail
    return Convergence(
        converged=True,
        same_state=same_state,
        same_log=same_log,
        applied_index=next(iter(views.values()))["applied_index"],
        views=plain,
        detail=detail,
    )


async def compare_logs(api: dict[str, str], views: dict[str, Any]) -> tuple[bool, str]:
    """Compare the digests of the log range every node stores, up to the applied index."""
    lo = max(v["first_index"] for v in views.values())
    hi = min(v["applied_index"] for v in views.values())
    if lo > hi:
        return True, "no common stored range"
    logs = await _all(api, f"?log_from={lo}&log_to={hi}")
    answers = {n: (v or {}).get("log_digest") for n, v in logs.items()}
    if None in answers.values() or len(set(answers.values())) != 1:
        return False, f"log digests over {lo}..{hi} differ: " + ", ".join(
            f"{n}={(d or 'no answer')[:19]}" for n, d in sorted(answers.items())
        )
    return True, f"logs agree over {lo}..{hi}"


@attrs.frozen(kw_only=True)
class LostWrite:
    """An acknowledged write that the final state contradicts."""

    key: str
    value: Any
    process: int
    acked_at: float
    final: Any

    def describe(self) -> str:
        return (
            f"{self.key}: write {self.value!r} by process {self.process} acknowledged at "
            f"{self.acked_at:.3f}s is lost (final value {self.final!r} was written earlier)"
        )


def _written(op: Operation) -> Any:
    if op.f is Fn.WRITE:
        return op.input
    if op.f is Fn.CAS:
        return op.input[1]
    return None  # delete


def lost_writes(ops: list[Operation], finals: dict[str, Operation]) -> list[LostWrite]:
    """Acknowledged writes contradicted by the final reads ``finals`` (key -> ok read)."""
    lost: list[LostWrite] = []
    for key, final in finals.items():
        u = final.output
        mutations = [
            op
            for op in ops
            if op.key == key
            and op.f in (Fn.WRITE, Fn.CAS, Fn.DELETE)
            and op.status is not EventType.FAIL
        ]
        writers_of_u = [op for op in mutations if _written(op) == u]
        # The latest moment a writer of u may have taken effect (-inf: the initial absence).
        latest_u = max((op.ret for op in writers_of_u), default=-math.inf)
        if u is not None and not writers_of_u:
            continue  # a value nobody wrote: the linearizability checker reports it
        for op in mutations:
            if op.status is not EventType.OK or op.f is Fn.DELETE or op.ret >= final.call:
                continue
            if _written(op) == u:
                continue
            if latest_u < op.call:
                lost.append(
                    LostWrite(
                        key=key, value=_written(op), process=op.process, acked_at=op.ret, final=u
                    )
                )
    return lost


def dead_nodes(cluster: LocalCluster, members: set[str] | None = None) -> list[str]:
    """Nodes (of ``members``, default all) not running now, and nodes whose log records a
    crash."""
    out = []
    for node in cluster.nodes:
        if members is not None and node.node_id not in members:
            continue
        if not node.running():
            code = node.proc.poll() if node.proc is not None else None
            lines = [x for x in _log_lines(node.log_path) if x.strip()]
            last = next((x for x in reversed(lines) if "shutting down" in x), "")
            last = last or (lines[-1] if lines else "")
            why = f"; its log: {last.strip()[:160]}" if last else ""
            out.append(f"{node.node_id} is not running (exit code {code}{why})")
        for line in _log_lines(node.log_path):
            if CRASH_MARKER in line:
                out.append(f"{node.node_id} log: {line.strip()[:200]}")
                break
    return out


def _log_lines(path: pathlib.Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def log_errors(cluster: LocalCluster, per_node: int = 5) -> list[str]:
    """Error and critical lines of the node logs (the first few per node), for the report."""
    out: list[str] = []
    for node in cluster.nodes:
        lines = [x for x in _log_lines(node.log_path) if any(lv in x[:40] for lv in ERROR_LEVELS)]
        out.extend(f"{node.node_id}: {x.strip()[:200]}" for x in lines[:per_node])
        if len(lines) > per_node:
            out.append(f"{node.node_id}: ... {len(lines) - per_node} more")
    return out


def snapshots_installed(cluster: LocalCluster) -> list[str]:
    """``"<node>@<index>"`` for every snapshot a node installed from its leader (its log)."""
    out = []
    for node in cluster.nodes:
        for line in _log_lines(node.log_path):
            if '"snapshot installed"' in line:
                index = line.split(" index=", 1)[1].split()[0] if " index=" in line else "?"
                out.append(f"{node.node_id}@{index}")
    return out
