"""The etcd side of ``scripts/bench --compare-etcd``: a local 3-member etcd cluster and a Go load
generator built with etcd's own client.

The cluster: ``etcd`` processes on loopback (ports found free, data directories under the run's
temporary directory), fsync on as etcd's default, stopped by PID at the end. The load generator
(``etcd_loadgen/main.go``) is built on first use with the Debian packages ``golang-go`` and
``golang-etcd-server-dev`` (GOPATH mode: nothing downloaded) into ``~/.cache/univrs-bench``;
it runs the same closed loop as the univrs bench (N clients over C connections, each writing or
linearizably reading its own key). A Go client on gRPC is what etcd's own benchmark tool uses:
a Python client would cap etcd's figure with its own CPU. Its CPU per operation is measured
from /proc and reported, as the univrs client's is.

Who may use it: the operator running the bench on their own machine; nothing listens beyond
127.0.0.1, and the processes are the bench's own children.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from univrs.bench import gobuild
from univrs.bench.cpu import cpu_seconds
from univrs.tools.devcluster import wait_for
from univrs.tools.ports import free_ports
from univrs.tools.started import last_line_of

SOURCE = pathlib.Path(__file__).with_name("etcd_loadgen")  # its Go sources
GO_PACKAGES = {"go.etcd.io/etcd/clientv3": "golang-etcd-server-dev"}  # import path -> Debian


def missing() -> str | None:
    """Why the comparison cannot run here (a message for the operator), or None."""
    if shutil.which("etcd") is None:
        return "etcd is not installed (Debian: apt-get install etcd-server)"
    lacking = gobuild.missing(GO_PACKAGES)
    if lacking is not None:
        return f"the etcd load generator cannot be built: {lacking}"
    return None


def etcd_version() -> str:
    out = subprocess.run(["etcd", "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split(":", 1)[-1].strip() if first else "?"


def build_loadgen() -> pathlib.Path:
    """The load generator's binary, built once per version of its source."""
    return gobuild.build(SOURCE, "etcd_loadgen")


START_ATTEMPTS = 3  # starts of the etcd cluster on picked ports, each on other ports
PORT_TAKEN = "address already in use"  # etcd's log when it cannot bind a listen URL


class EtcdExited(RuntimeError):
    """An etcd member exited while its cluster started (``code``; ``line``: its log's last
    line)."""

    def __init__(self, name: str, code: int | None, line: str) -> None:
        super().__init__(f"{name} exited at start (code {code}): {line or '(no log)'}")
        self.code = code
        self.line = line

    @property
    def port_taken(self) -> bool:
        """It could not bind a listen URL: another process holds that port."""
        return PORT_TAKEN in self.line


class EtcdCluster:
    """A local etcd cluster of ``size`` members under ``folder``; a context manager that stops
    its processes (by PID) on exit."""

    def __init__(self, folder: pathlib.Path, size: int = 3) -> None:
        self.folder = folder
        self.size = size
        self.procs: list[subprocess.Popen[bytes]] = []
        self._pick_ports()

    def _pick_ports(self) -> None:
        ports = free_ports(2 * self.size)
        self.client_ports = ports[: self.size]
        self.peer_ports = ports[self.size :]

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    @property
    def pids(self) -> dict[str, int]:
        return {f"etcd{i}": p.pid for i, p in enumerate(self.procs)}

    def start(self, timeout: float = 60.0) -> None:
        initial = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, p in enumerate(self.peer_ports))
        for i in range(self.size):
            data = self.folder / f"etcd{i}"
            data.mkdir(parents=True, exist_ok=True)
            client = f"http://127.0.0.1:{self.client_ports[i]}"
            peer = f"http://127.0.0.1:{self.peer_ports[i]}"
            cmd = [
                "etcd",
                f"--name=e{i}",
                f"--data-dir={data / 'data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={initial}",
                "--initial-cluster-state=new",
                "--initial-cluster-token=univrs-bench",
                "--logger=zap",
                "--log-level=warn",
            ]
            # The child has its own copy of the log's descriptor: the parent's is closed at
            # once (a retried start would otherwise leave three more open).
            with (self.folder / f"etcd{i}.log").open("wb") as log:
                self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        wait_for(self._healthy, timeout, "a healthy etcd cluster", every=0.2)

    def _raise_if_exited(self) -> None:
        """An etcd that exited while the cluster starts: ``EtcdExited`` with its log's last
        line, instead of waiting out the start's timeout."""
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                raise EtcdExited(
                    f"etcd{i}", p.returncode, last_line_of(self.folder / f"etcd{i}.log")
                )

    def leader(self) -> str | None:
        """The member whose ``/metrics`` says ``etcd_server_is_leader 1`` (named as in
        ``pids``), or None when not exactly one does."""
        from univrs.bench.nodes import parse_metrics

        leaders = []
        for i, port in enumerate(self.client_ports):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    metrics = parse_metrics(r.read().decode())
            except (OSError, ValueError):
                continue
            if metrics.get("etcd_server_is_leader") == 1.0:
                leaders.append(f"etcd{i}")
        return leaders[0] if len(leaders) == 1 else None

    def _healthy(self) -> bool:
        self._raise_if_exited()
        for port in self.client_ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if json.loads(r.read()).get("health") != "true":
                        return False
            except (OSError, ValueError):
                return False
        return True

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> EtcdCluster:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self.start()
                return self
            except EtcdExited as exc:
                self.stop()
                if not exc.port_taken or attempt == START_ATTEMPTS:
                    raise
                # Another process bound a picked port between the pick and etcd's bind (the
                # univrs side's remedy, univrs/tools/started.py): again on other ports.
                print(f"bench: {exc}; starting etcd again on other ports", file=sys.stderr)
                self.procs = []
                shutil.rmtree(self.folder, ignore_errors=True)
                self._pick_ports()
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_load(
    binary: pathlib.Path,
    cluster: EtcdCluster,
    *,
    clients: int,
    connections: int,
    duration: float,
    warmup: float,
    op: str,
) -> dict[str, Any]:
    """One closed-loop measurement against ``cluster``: the load generator's figures and the
    CPU milliseconds per operation of each etcd member and of the load generator."""
    cmd = [
        str(binary),
        f"-endpoints={','.join(cluster.endpoints)}",
        f"-clients={clients}",
        f"-conns={max(1, min(connections, clients))}",
        f"-duration={duration}",
        f"-warmup={warmup}",
        f"-op={op}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        processes = {**cluster.pids, "client": proc.pid}
        line = proc.stdout.readline()
        if line.strip() != "start":
            raise RuntimeError(f"etcd load generator: {line.strip() or 'exited'}")
        before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        # Sample the load generator's CPU just before it exits: it prints its result last.
        line = proc.stdout.readline()
        after = {name: cpu_seconds(pid) for name, pid in processes.items()}
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if not line.strip():
        raise RuntimeError("etcd load generator: no result")
    result: dict[str, Any] = json.loads(line)
    counted = max(1, result["ops"])
    result["cpu_ms_per_op"] = {
        name: (a - b) * 1000 / counted
        for name in processes
        if (b := before[name]) is not None and (a := after[name]) is not None
    }
    if not result.get("first_error"):
        result["first_error"] = None
    result["leader"] = cluster.leader()  # labels its CPU figure "(leader)" in the report
    return result


class EtcdSide:
    """The etcd side of ``--compare-etcd``: a local cluster and the load generator, run one
    repeat at a time (``run_repeat``) between univrs's repeats, so that the two systems'
    runs of each repeat are minutes apart, not a whole sweep (this machine's speed drifts:
    etcd's own CPU per write moved 0.24 -> 0.40 ms between two runs an hour apart). A context
    manager: the cluster runs from ``__enter__`` to ``__exit__`` (stopped by PID), idle while
    univrs is measured."""

    def __init__(
        self,
        folder: pathlib.Path,
        *,
        nodes: int,
        clients: list[int],
        connections: int,
        duration: float,
        warmup: float,
        reads: bool,
        progress: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.folder = folder
        self.nodes = nodes
        self.clients = clients
        self.connections = connections
        self.duration = duration
        self.warmup = warmup
        self.reads = reads
        self.progress = progress
        self.runs: dict[str, dict[int, list[dict[str, Any]]]] = {"writes": {}, "reads": {}}
        self._binary: pathlib.Path | None = None
        self._cluster: EtcdCluster | None = None

    def __enter__(self) -> EtcdSide:
        self._binary = build_loadgen()
        print("starting a local 3-member etcd cluster ...", file=sys.stderr)
        self._cluster = EtcdCluster(self.folder, size=self.nodes).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cluster is not None:
            self._cluster.__exit__(*exc)
            self._cluster = None

    def run_repeat(self, repeat: int) -> None:
        """Every client count and phase once (repeat number ``repeat``, from 0)."""
        assert self._binary is not None and self._cluster is not None, "not entered"
        phases = [("writes", "put")] + ([("reads", "get")] if self.reads else [])
        for n in self.clients:
            for phase, op in phases:
                m = run_load(
                    self._binary,
                    self._cluster,
                    clients=n,
                    connections=self.connections,
                    duration=self.duration,
                    warmup=self.warmup,
                    op=op,
                )
                self.runs[phase].setdefault(n, []).append(m)
                self.progress(f"etcd {phase}, {n} clients, run {repeat + 1}", m)

    def result(self, median_of: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> dict[str, Any]:
        """Medians per phase and client count (``median_of``: the bench's reduction)."""
        out: dict[str, Any] = {
            phase: {str(n): median_of(ms) for n, ms in by_n.items()}
            for phase, by_n in self.runs.items()
            if by_n
        }
        out["version"] = etcd_version()
        return out
