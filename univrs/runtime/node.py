"""A whole univrs node: storage, transport, driver, state machine and API under one nursery.

``run_node(config)`` opens the data dir (refusing a corrupt, foreign or locked one), bootstraps a
new cluster when the data dir is new and the config says so, starts the raft transport and the
HTTP API, and calls ``task_status.started(node)`` once both listen. Any task that crashes takes
the whole node down loudly; cancellation (SIGINT/SIGTERM in ``univrs node start``) stops
accepting, lets an in-flight storage write finish and closes LMDB.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import attrs
import trio

from univrs.config import NodeConfig
from univrs.net.settings import TransportSettings
from univrs.net.transport import RaftTransport
from univrs.raft import bootstrap_state
from univrs.raft.messages import Membership
from univrs.raft.node import RaftNode
from univrs.raft.ready import InitialState, Status
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.metrics import NodeMetrics
from univrs.runtime.store import RaftStateStore
from univrs.sm.state import ClusterStateMachine
from univrs.storage import LogStore

log = logging.getLogger("univrs.node")


def initial_membership(config: NodeConfig) -> Membership:
    """The membership a brand-new data dir bootstraps with.

    With ``[raft.bootstrap]`` nodes: all of them as voters (every listed node starts from the
    same configuration). Without: a single-node cluster of this node (the embedded default).
    """
    if config.bootstrap:
        voters = frozenset(n.id for n in config.bootstrap)
        addresses = tuple(sorted((n.id, n.addr) for n in config.bootstrap))
        apis = tuple(sorted((n.id, n.api) for n in config.bootstrap if n.api))
    else:
        voters = frozenset({config.node_id})
        addresses = ((config.node_id, config.raft_addr),)
        apis = ((config.node_id, config.api_addr),)
    return Membership(voters=voters, addresses=addresses, api_addresses=apis)


def _is_new(initial: InitialState) -> bool:
    return (
        initial.snapshot is None
        and not initial.entries
        and initial.hard_state.term == 0
        and initial.hard_state.vote is None
    )


@attrs.define(eq=False)
class Node:
    """A running node's parts, for the API and for tests (read them, do not replace them)."""

    config: NodeConfig
    storage: LogStore
    runtime: RaftRuntime
    transport: RaftTransport
    metrics: NodeMetrics
    store: RaftStateStore
    raft_port: int | None = None
    api_port: int | None = None

    @property
    def node_id(self) -> str:
        return self.config.node_id

    def status(self) -> Status:
        return self.runtime.status()


def open_storage(config: NodeConfig) -> tuple[LogStore, InitialState]:
    """Open (or create) the data dir and read the state to start from; bootstrap if new."""
    storage = LogStore.open(config.data_dir, node_id=config.node_id, cluster_id=config.cluster_id)
    try:
        initial = storage.initial_state()
        if _is_new(initial):
            initial = bootstrap_state(initial_membership(config))
            storage.append(
                hard_state=initial.hard_state, truncate_from=None, entries=initial.entries
            )
            log.info(
                "bootstrapped a new cluster",
                extra={"voters": ",".join(sorted(initial.membership.voters))},
            )
    except BaseException:
        storage.close()
        raise
    return storage, initial


async def run_node(
    config: NodeConfig,
    *,
    serve_api: bool = True,
    seed: int | None = None,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node until cancelled (see the module docstring)."""
    storage, initial = await trio.to_thread.run_sync(open_storage, config)
    try:
        rng = random.Random(seed)
        core = RaftNode(config.node_id, rng=rng, config=config.raft_config(), initial=initial)
        runtime = RaftRuntime(
            core=core,
            sm=ClusterStateMachine(),
            writer_write=storage.append,
            send=lambda _m: None,
            tick_seconds=config.tick_ms / 1000,
        )
        metrics = NodeMetrics(runtime.status)
        runtime.metrics = metrics
        transport = RaftTransport(
            node_id=config.node_id,
            cluster_id=config.cluster_id,
            inbox=runtime.inbox,
            rng=rng,
            listen_addr=config.raft_addr,
            settings=TransportSettings(max_payload_size=config.max_payload_size),
        )
        runtime.send = transport.send
        runtime.on_membership = lambda m: transport.set_peer_addresses(
            config.dial_addresses(dict(m.addresses))
        )
        node = Node(
            config=config,
            storage=storage,
            runtime=runtime,
            transport=transport,
            metrics=metrics,
            store=RaftStateStore(runtime),
        )
        async with trio.open_nursery() as nursery:
            node.raft_port = await nursery.start(transport.run)
            await nursery.start(runtime.run)
            status = runtime.status()
            if status.membership.voters == {config.node_id}:
                await runtime.call(lambda c: c.campaign())  # a lone voter need not wait
            if serve_api:
                from univrs.api.server import serve_api as _serve

                node.api_port = await nursery.start(_serve, node)
            log.info(
                "node started",
                extra={
                    "raft": f"{_host(config.raft_addr)}:{node.raft_port}",
                    "api": f"{_host(config.api_addr)}:{node.api_port}" if serve_api else "-",
                    "term": status.term,
                    "last_index": status.last_index,
                },
            )
            task_status.started(node)
    finally:
        # Synchronous on purpose: we may be cancelled, and closing LMDB is quick. Any storage
        # write in flight has finished: the writer's thread call is not cancellable.
        storage.close()
        log.info("node stopped")


def _host(addr: str) -> str:
    return addr.rsplit(":", 1)[0]


def describe(node: Node) -> dict[str, Any]:
    """This node's own view as plain JSON-able data (for /v1/node/status and the CLI)."""
    s = node.status()
    return {
        "id": s.id,
        "role": s.role.value,
        "term": s.term,
        "leader": s.leader,
        "vote": s.vote,
        "commit_index": s.commit,
        "applied_index": s.applied,
        "last_index": s.last_index,
        "last_term": s.last_term,
        "first_index": s.first_index,
        "raft_addr": node.config.raft_addr,
        "api_addr": node.config.api_addr,
        "voters": sorted(s.membership.voters),
        "learners": sorted(s.membership.learners),
        "peers": [
            {
                "id": p.id,
                "match_index": p.match,
                "next_index": p.next,
                "state": p.state,
                "lag": max(0, s.last_index - p.match),
                "recent_active": p.recent_active,
                "voter": p.voter,
            }
            for p in s.peers
        ],
    }
