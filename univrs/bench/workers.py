"""The bench's load split over worker processes (``scripts/bench --client-procs N``).

One Python process (one thread holding the GIL) spends 0.06-0.09 ms of CPU per read on the
client side: it caps the load it can offer near 11,000-16,000 reads/s whatever the servers
cost. With ``--client-procs N`` the bench starts N worker processes
(``python -m univrs.bench.workers``), each with its own client connections, and hands each
measurement's closed loops to them, split round-robin; the bench's own process keeps the
linearizability sample (its writers and paced readers, recorded and checked there) and the
measuring (CPU of every process, the nodes' metrics, py-spy).

``--loadgen go`` starts the same worker written in Go (``univrs_loadgen/``, built on
first use from Debian's Go packages: ``go_worker``) instead: the same protocol, the same
requests on the wire (sessions, keys, frames), the same histogram, at about a third of this
one's CPU per operation (0.013-0.020 against 0.054-0.058 ms per write at 64 clients). One Go
process runs its loops on every CPU.

Protocol: JSON lines on the worker's stdin and stdout. The bench sends a set-up line
(``endpoints``, ``connections``, ``read_nodes``: fast addresses to pin read connections to, or
null to follow the leader, ``keys``), the worker answers ``{"ready": true}`` once its clients
are connected; then per measurement ``{"phase", "clients": [indices], "start": the window's
start on CLOCK_MONOTONIC (shared by the processes), "duration"}``, answered with the
window's latency histogram (univrs/bench/latency.py, merged by the bench), the errors and
whether the loops stalled. End of input (or ``{"quit": true}``) ends the worker. The pool
stops workers that do not end by PID.
"""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from typing import IO, Any

import attrs
import trio

from univrs.bench import gobuild
from univrs.bench.latency import Histogram
from univrs.bench.measure import STALL_GRACE, Op, closed_loops
from univrs.client.client import Client, open_client
from univrs.server.heap import settle

__all__ = [
    "GO_PACKAGES",
    "PYTHON_WORKER",
    "WorkerPool",
    "connection_plan",
    "go_worker",
    "go_worker_missing",
    "load_ops",
    "spread",
]

MAX_ERRORS_SENT = 20
READY_TIMEOUT = 60.0
PYTHON_WORKER = [sys.executable, "-m", "univrs.bench.workers"]
GO_SOURCE = pathlib.Path(__file__).with_name("univrs_loadgen")  # its Go sources
GO_PACKAGES = {"github.com/gorilla/websocket": "golang-github-gorilla-websocket-dev"}


def go_worker_missing() -> str | None:
    """Why the Go worker (``univrs_loadgen/``: the same protocol, requests and
    histogram as this module's worker) cannot be built here, or None."""
    return gobuild.missing(GO_PACKAGES)


def go_worker() -> list[str]:
    """The Go worker's command line (built on first use: univrs/bench/gobuild.py)."""
    return [str(gobuild.build(GO_SOURCE, "univrs_loadgen"))]


def spread(indices: list[int], procs: int) -> list[list[int]]:
    """``indices`` dealt round-robin to ``procs`` processes."""
    return [indices[p::procs] for p in range(procs)]


def connection_plan(
    connections: int, procs: int, nodes: list[str] | None, proc: int = 0
) -> list[str | None]:
    """The connections of one process: for each, the node address it is pinned to (reads
    spread over every node) or None (follows the leader). ``connections`` is the bench's
    total; each process gets its share, and pinned connections are rounded up to a multiple
    of the nodes (every node the same share), rotated by ``proc`` so that the processes'
    surplus does not all land on the first node."""
    per = max(1, math.ceil(connections / procs))
    if not nodes:
        return [None] * per
    per = math.ceil(per / len(nodes)) * len(nodes)
    return [nodes[(j + proc) % len(nodes)] for j in range(per)]


def load_ops(keys: list[str], answer: str = "minimal") -> dict[str, Op]:
    """The bench's operations by phase: a keyed scale (one log entry), a linearizable read, a
    lease read of the client's own workload. The scale asks for ``answer`` ("minimal": its
    id and version, as etcd's Put answers its revision; "full": the workload document)."""
    counter = [0]

    async def write(client: Client, i: int) -> None:
        counter[0] += 1
        await client.scale_workload(keys[i], counter[0] % 10, answer=answer)

    async def read(client: Client, i: int) -> None:
        await client.get_workload(keys[i], consistency="linearizable")

    async def lease_read(client: Client, i: int) -> None:
        await client.get_workload(keys[i], consistency="lease")

    return {"writes": write, "reads": read, "lease-reads": lease_read}


async def open_clients(
    stack: AsyncExitStack, endpoints: list[str], plan: list[str | None]
) -> list[Client]:
    """One client per planned connection: pinned to its node (``stay``) or leader-following."""
    out = []
    for pinned in plan:
        if pinned is None:
            client = await stack.enter_async_context(open_client(endpoints, timeout=30))
        else:
            client = await stack.enter_async_context(open_client([pinned], timeout=30, stay=True))
        out.append(client)
    return out


# ---------------------------------------------------------------- the worker process


def _assigned(conns: list[Client], indices: list[int]) -> Callable[[int], Client]:
    """Client index -> its connection: this process's clients dealt over its connections."""
    position = {i: k for k, i in enumerate(indices)}
    return lambda i: conns[position[i] % len(conns)]


async def _serve(read_line: Callable[[], str], out: IO[str]) -> None:
    def send(doc: dict[str, Any]) -> None:
        out.write(json.dumps(doc) + "\n")
        out.flush()

    setup = json.loads(read_line())
    keys = [f"bench-{i}" for i in range(int(setup["keys"]))]
    ops = load_ops(keys, str(setup.get("answer", "minimal")))
    async with AsyncExitStack() as stack:
        plan = connection_plan(int(setup["connections"]), int(setup["procs"]), None)
        writers = await open_clients(stack, setup["endpoints"], plan)
        readers = writers
        if setup.get("read_nodes"):
            read_plan = connection_plan(
                int(setup["connections"]),
                int(setup["procs"]),
                setup["read_nodes"],
                int(setup["proc"]),
            )
            readers = await open_clients(stack, setup["endpoints"], read_plan)
        send({"ready": True})
        while True:
            line = await trio.to_thread.run_sync(read_line)
            if not line.strip():
                return  # end of input: the bench is done (or gone)
            cmd = json.loads(line)
            if cmd.get("quit"):
                return
            phase = cmd["phase"]
            conns = writers if phase == "writes" else readers
            indices: list[int] = cmd["clients"]
            start = trio.current_time() + (float(cmd["start"]) - time.monotonic())
            stop = start + float(cmd["duration"])
            hist = Histogram()
            errors: list[str] = []
            completed = await closed_loops(
                indices,
                _assigned(conns, indices),
                ops[phase],
                start,
                stop,
                hist,
                errors,
            )
            send(
                {
                    "hist": hist.to_json(),
                    "errors": errors[:MAX_ERRORS_SENT],
                    "error_count": len(errors),
                    "stalled": not completed,
                }
            )


def main() -> int:
    settle(())  # the worker's imports leave the GC's full collections (as a node's do)
    trio.run(_serve, sys.stdin.readline, sys.stdout)
    return 0


# ---------------------------------------------------------------- the bench's side


@attrs.define(eq=False)
class WorkerPool:
    """N worker processes, started by ``start``, stopped by ``stop`` (by PID)."""

    # The worker's command line: the Python worker, or the Go one (``go_worker``).
    command: list[str] = attrs.field(factory=lambda: [*PYTHON_WORKER])
    procs: list[subprocess.Popen[str]] = attrs.field(factory=list)
    # The workers run the linearizability sample themselves (the Go worker does).
    sample_in_worker: bool = False

    @property
    def runs_sample(self) -> bool:
        """Whether ``run`` takes the sample (then to the first worker, which must run all of
        the sampled clients: one worker process)."""
        return self.sample_in_worker and len(self.procs) == 1

    @property
    def pids(self) -> dict[str, int]:
        """The workers' processes as the CPU figures name them: client-1 .. client-N."""
        return {f"client-{p + 1}": proc.pid for p, proc in enumerate(self.procs)}

    async def start(
        self,
        n: int,
        endpoints: list[str],
        connections: int,
        keys: int,
        read_nodes: list[str] | None,
        answer: str = "minimal",
    ) -> None:
        """Start ``n`` workers and wait until each has its connections open."""
        for p in range(n):
            proc = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
            self.procs.append(proc)
            setup = {
                "endpoints": endpoints,
                "connections": connections,
                "procs": n,
                "proc": p,
                "keys": keys,
                "read_nodes": read_nodes,
                "answer": answer,
            }
            self._send(proc, setup)
        with trio.fail_after(READY_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for proc in self.procs:
                    nursery.start_soon(self._expect_ready, proc)

    async def _expect_ready(self, proc: subprocess.Popen[str]) -> None:
        answer = await self._receive(proc)
        if not answer.get("ready"):
            raise RuntimeError(f"bench worker {proc.pid} did not start: {answer}")

    def _send(self, proc: subprocess.Popen[str], doc: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(doc) + "\n")
        proc.stdin.flush()

    async def _receive(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
        if not line:
            raise RuntimeError(f"bench worker {proc.pid} exited (code {proc.poll()})")
        doc: dict[str, Any] = json.loads(line)
        return doc

    async def run(
        self,
        phase: str,
        indices: list[int],
        start: float,
        duration: float,
        sample: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Run ``phase``'s closed loops for ``indices`` (dealt round-robin to the workers) in
        the window from ``start`` (CLOCK_MONOTONIC) for ``duration`` s; each worker's answer
        (``errors``: the first few messages, ``error_count``: how many; ``sample``: the
        history of ``sample``'s clients, ``Sample.worker_spec``, when ``runs_sample``)."""
        if sample is not None and not self.runs_sample:
            raise ValueError("these workers do not run the sample")
        shares = spread(indices, len(self.procs))
        for proc, share in zip(self.procs, shares, strict=True):
            cmd: dict[str, Any] = {
                "phase": phase,
                "clients": share,
                "start": start,
                "duration": duration,
            }
            if sample is not None:
                cmd["sample"] = sample
            self._send(proc, cmd)
        answers: list[dict[str, Any]] = []
        wait = start - time.monotonic() + duration + STALL_GRACE + 10.0
        with trio.fail_after(max(1.0, wait)):
            async with trio.open_nursery() as nursery:

                async def one(proc: subprocess.Popen[str]) -> None:
                    answers.append(await self._receive(proc))

                for proc in self.procs:
                    nursery.start_soon(one, proc)
        return answers

    def stop(self, timeout: float = 5.0) -> None:
        """End every worker: end of input first, then SIGTERM and SIGKILL by PID."""
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.closed:
                with suppress(OSError):
                    proc.stdin.close()
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()


if __name__ == "__main__":
    sys.exit(main())
