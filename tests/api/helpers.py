"""Real in-process clusters for the client-surface tests: ``run_node`` tasks on loopback.

Each node runs in its own cancel scope, so a test can kill one (cancel: its connections drop,
its storage closes, what it persisted stays) and restart it on the same data dir. Ports are
picked free per cluster. Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, overload

import attrs
import trio

from univrs.client import Client
from univrs.config import BootstrapNode, NodeConfig
from univrs.net.http import HttpResponse, request_json
from univrs.raft.ready import Role
from univrs.server.node import Node, run_node
from univrs.tools.ports import free_ports

T = TypeVar("T")
WAIT = 30.0  # generous: two shared cores, fsync on
# The reconciler is on by default; a test that creates instances by hand (the instance API,
# exact event sequences) turns it off, as an operator who places instances themselves would.
BY_HAND = {"reconcile_resync_ms": 0}


@overload
async def wait_until(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = ..., every: float = ...
) -> T: ...


@overload
async def wait_until(
    probe: Callable[[], T | None], what: str, timeout: float = ..., every: float = ...
) -> T: ...


async def wait_until(
    probe: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    what: str,
    timeout: float = WAIT,
    every: float = 0.01,
) -> T:
    """Poll ``probe`` (sync or async) until it returns something truthy."""
    deadline = trio.current_time() + timeout
    while True:
        value = probe()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if trio.current_time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await trio.sleep(every)


@attrs.define(eq=False)
class Cluster:
    """A running in-process cluster (see the module docstring)."""

    nursery: trio.Nursery
    configs: dict[str, NodeConfig]
    nodes: dict[str, Node] = attrs.field(factory=dict)
    _scopes: dict[str, trio.CancelScope] = attrs.field(factory=dict)
    _stopped: dict[str, trio.Event] = attrs.field(factory=dict)

    async def _run(self, config: NodeConfig, join: str | None, *, task_status: Any) -> None:
        done = self._stopped[config.node_id] = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._scopes[config.node_id] = scope
                await run_node(config, join=join, task_status=task_status)
        finally:
            done.set()

    async def start(self, node_id: str, join: str | None = None) -> Node:
        """Start ``node_id`` (on its data dir as it is); ``join``: a member's API to join."""
        node: Node = await self.nursery.start(self._run, self.configs[node_id], join)
        self.nodes[node_id] = node
        return node

    async def kill(self, node_id: str) -> None:
        """Stop a node abruptly (its tasks are cancelled; nothing is handed over)."""
        self._scopes[node_id].cancel()
        await self._stopped[node_id].wait()
        del self.nodes[node_id]

    def running(self) -> list[Node]:
        return [self.nodes[k] for k in sorted(self.nodes)]

    def leader(self) -> Node | None:
        """The node that leads, when every running node agrees on it."""
        leaders = {n.status().leader for n in self.running()}
        if len(leaders) != 1:
            return None
        (lid,) = leaders
        if lid is None or lid not in self.nodes:
            return None
        node = self.nodes[lid]
        return node if node.status().role is Role.LEADER else None

    async def wait_leader(self, timeout: float = WAIT) -> Node:
        return await wait_until(self.leader, "an agreed leader", timeout)

    async def wait_bound_leader(self) -> Node:
        """The leader, once it has recorded every member's incarnation."""
        leader = await self.wait_leader()

        def bound() -> bool:
            m = leader.status().membership
            return all(m.incarnation_of(n) is not None for n in m.voters)

        await wait_until(bound, "the incarnation bindings")
        return leader

    def followers(self) -> list[Node]:
        return [n for n in self.running() if n.status().role is not Role.LEADER]

    def api(self, node: Node | str) -> str:
        """The API address of ``node`` (or of the node of that id, running or not)."""
        if isinstance(node, str):
            return self.configs[node].api_addr
        return f"127.0.0.1:{node.api_port}"

    def client_address(self, node: Node) -> str:
        return f"127.0.0.1:{node.raft_port}"

    def client_addresses(self) -> list[str]:
        return [c.raft_addr for c in self.configs.values()]

    async def http(
        self, node: Node, method: str, path: str, body: Any = None, **kw: Any
    ) -> HttpResponse:
        return await request_json(self.api(node), method, path, body=body, timeout=20.0, **kw)


def make_configs(folder: pathlib.Path, size: int, **overrides: Any) -> dict[str, NodeConfig]:
    ports = free_ports(2 * size)
    ids = [f"n{i + 1}" for i in range(size)]
    raft = {nid: f"127.0.0.1:{ports[2 * i]}" for i, nid in enumerate(ids)}
    api = {nid: f"127.0.0.1:{ports[2 * i + 1]}" for i, nid in enumerate(ids)}
    bootstrap = tuple(BootstrapNode(id=n, addr=raft[n], api=api[n]) for n in ids)
    return {
        nid: NodeConfig(
            node_id=nid,
            data_dir=folder / nid,
            raft_addr=raft[nid],
            api_addr=api[nid],
            bootstrap=bootstrap if size > 1 else (),
            initial_cluster_token=f"test-{folder.name}",
            **overrides,
        )
        for nid in ids
    }


@asynccontextmanager
async def open_cluster(
    folder: pathlib.Path, size: int = 3, **overrides: Any
) -> AsyncIterator[Cluster]:
    """Start ``size`` nodes (``NodeConfig`` fields ``overrides``) and wait for an agreed
    leader."""
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=make_configs(folder, size, **overrides))
        for nid in cluster.configs:
            await cluster.start(nid)
        await cluster.wait_leader()
        try:
            yield cluster
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_proxied_cluster(
    folder: pathlib.Path, size: int = 3, **overrides: Any
) -> AsyncIterator[tuple[Cluster, dict[str, PausableProxy]]]:
    """``open_cluster``, but every raft connection to a node goes through its
    ``PausableProxy`` (the proxies by node id): pausing one cuts the node off with its
    connections left open, like a stopped process."""
    configs = make_configs(folder, size, **overrides)
    async with trio.open_nursery() as nursery:
        proxies = {}
        dial = []
        for nid, config in configs.items():
            proxy = PausableProxy(target_port=int(config.raft_addr.rsplit(":", 1)[1]))
            proxies[nid] = proxy
            dial.append((nid, f"127.0.0.1:{await nursery.start(proxy.run)}"))
        cluster = Cluster(
            nursery=nursery,
            configs={nid: attrs.evolve(c, dial=tuple(dial)) for nid, c in configs.items()},
        )
        for nid in cluster.configs:
            await cluster.start(nid)
        await cluster.wait_leader(timeout=60)
        try:
            yield cluster, proxies
        finally:
            nursery.cancel_scope.cancel()


WORKLOAD = {"name": "web", "image": "nginx:1.27", "replicas": 2, "labels": {"tier": "web"}}


class BackgroundCluster:
    """A cluster running in its own thread (its own trio loop), for synchronous tests: the CLI,
    the sync client, schemathesis. Use as a context manager."""

    def __init__(self, folder: pathlib.Path, size: int = 1, **overrides: Any) -> None:
        import threading

        self.folder, self.size, self.overrides = folder, size, overrides
        self.cluster: Cluster | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            async with open_cluster(self.folder, self.size, **self.overrides) as cluster:
                self.cluster = cluster
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                self._ready.set()
                await self._stop.wait()

        try:
            trio.run(run)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def __enter__(self) -> BackgroundCluster:
        self._thread.start()
        if not self._ready.wait(WAIT * 2) or self._error is not None:
            raise RuntimeError(f"cluster did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(WAIT)

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` on the cluster's loop and return its result."""
        assert self._token is not None
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    @property
    def apis(self) -> list[str]:
        assert self.cluster is not None
        return [self.cluster.api(n) for n in self.cluster.running()]

    @property
    def endpoints(self) -> list[str]:
        assert self.cluster is not None
        return [self.cluster.client_address(n) for n in self.cluster.running()]


@attrs.define(eq=False)
class PausableProxy:
    """A TCP proxy to ``target`` that can stop forwarding (like a SIGSTOPped node: the
    connection stays open, nothing comes back)."""

    target_port: int
    _paused: bool = False
    _resumed: trio.Event = attrs.field(factory=trio.Event)

    def pause(self) -> None:
        self._paused = True
        self._resumed = trio.Event()

    def resume(self) -> None:
        self._paused = False
        self._resumed.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._serve, listeners)
            task_status.started(port)

    async def _serve(self, downstream: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await downstream.aclose()
            return
        async with downstream, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, downstream, upstream, nursery.cancel_scope)
            nursery.start_soon(self._pump, upstream, downstream, nursery.cancel_scope)

    async def _pump(
        self, src: trio.SocketStream, dst: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await src.receive_some(65536):
                while self._paused:
                    await self._resumed.wait()
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()


async def create_workloads(client: Client, count: int, arg: str, writers: int = 8) -> None:
    """Workloads w0 .. w{count-1} (image "x", the one argument ``arg``) created by ``writers``
    callers at once."""

    async def create(k: int) -> None:
        for i in range(k, count, writers):
            await client.create_workload({"name": f"w{i}", "image": "x", "args": [arg]})

    async with trio.open_nursery() as nursery:
        for k in range(writers):
            nursery.start_soon(create, k)
