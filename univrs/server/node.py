"""A whole univrs node: storage, transport, driver, state machine and API under one nursery.

``run_node(config)`` opens the data dir (refusing a corrupt, foreign or locked one), bootstraps a
new cluster when the data dir is new and ``initial_cluster_state`` is "new" (unless a bootstrap
peer shows that this id already served: ``univrs.server.incarnation``), or, with ``join``,
joins an existing one instead; with "existing" an empty node waits to be joined. It starts
the raft transport and the HTTP API, and calls ``task_status.started(node)`` once both listen.
Any task that crashes takes the whole node down loudly; cancellation (SIGINT/SIGTERM in
``univrs node start``) stops accepting, lets an in-flight storage write finish and closes LMDB.

A node that bootstrapped itself alone and holds nothing yet (the embedded default) can be told
to join another cluster (``univrs cluster join``): it stops, discards its single-node log and
starts again empty, joining (``Node.request_rejoin``).
"""

from __future__ import annotations

import functools
import logging
import random
import socket
from typing import Any

import attrs
import trio

from univrs.api.forward import Forwarder
from univrs.api.store import RaftStateStore
from univrs.config import NodeConfig
from univrs.errors import Conflict, StorageError
from univrs.net.address import split_host_port
from univrs.net.probe import PROBE_PATH, probe_route
from univrs.net.settings import TransportSettings
from univrs.net.transport import RaftTransport
from univrs.raft.messages import Membership
from univrs.raft.node import RaftNode
from univrs.raft.ready import Role, Status
from univrs.runtime.addresses import PeerMap
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.events import Inbox
from univrs.runtime.liveness import Liveness
from univrs.runtime.membership import members as member_rows
from univrs.runtime.membership import record_incarnations
from univrs.runtime.metrics import NodeMetrics
from univrs.runtime.packing import Packing
from univrs.runtime.ports import MEMORY_STATE
from univrs.runtime.snapshots import SnapshotChecker
from univrs.runtime.snapshotter import ScrubPolicy
from univrs.runtime.view import RuntimeView
from univrs.runtime.watch import WatchHub
from univrs.server.datadir import (
    data_dir_state,
    finish_opening,
    new_cluster_id,
    open_raw,
    wipe_raft_state,
)
from univrs.server.gauges import watch_metrics
from univrs.server.heap import register_gc_metrics
from univrs.server.incarnation import (
    BootstrapRefused,
    bound_incarnation,
    check_bootstrap,
    hold_incarnations,
    own_binding,
    probe_answerer,
)
from univrs.server.joining import JoinInfo, JoinRefused, check_join, prepare, run_join
from univrs.server.refusals import log_refusals
from univrs.server.removal import (
    MembershipWatch,
    RemovalGate,
    cluster_fingerprint,
    watch_for_removal,
)
from univrs.server.statedir import PersistentState, applied_membership
from univrs.server.wiring import check_tls, transport_from_config
from univrs.service.reconcile import Reconciler
from univrs.storage import LogStore
from univrs.storage.sm_tables import StateEnv
from univrs.storage.starts import begin_start, load_start_records, save_start_records

log = logging.getLogger("univrs.node")


@attrs.define(eq=False)
class Node:
    """A running node's parts, for the API and for tests (read them, do not replace them)."""

    config: NodeConfig
    storage: LogStore
    runtime: RaftRuntime
    transport: RaftTransport
    metrics: NodeMetrics
    liveness: Liveness
    cluster_id: str
    # The StateStore of this node (any role): the API, the fast protocol and the reconciler
    # go through it. Set once the node's nursery runs (its forwarder dials from there).
    store: RaftStateStore = attrs.field(init=False)
    reconciler: Reconciler | None = None  # None: [raft] reconcile_resync_ms = 0
    raft_port: int | None = None
    api_port: int | None = None
    # Join progress, for `univrs cluster join` to show: state and details.
    join: dict[str, Any] = attrs.field(factory=dict)
    # What the transport is told (membership + join-time addresses) and the applied-config watch.
    peer_map: PeerMap | None = None
    watch: MembershipWatch | None = None
    _rejoin: JoinInfo | None = None
    _scope: trio.CancelScope | None = None
    _nursery: trio.Nursery | None = None

    @property
    def node_id(self) -> str:
        return self.config.node_id

    def status(self) -> Status:
        return self.runtime.status()

    @property
    def removed(self) -> str | None:
        """Why this node believes it was removed from its cluster, or None."""
        return self.watch.removed if self.watch is not None else None

    def is_pristine(self) -> bool:
        """Alone in its own cluster, or in none (waiting to be joined, or a join interrupted
        before any entry arrived), and holding no state yet: safe to discard to join another."""
        s = self.status()
        stats = self.runtime.sm.statistics()
        alone = s.membership.voters == {self.node_id} and not s.membership.learners
        empty = not s.membership.members and s.last_index == 0
        return (
            (alone or empty)
            and self.runtime.last_snapshot_index == 0
            and stats.workloads == stats.instances == stats.nodes == 0
            and stats.accounts == stats.sessions == 0
        )

    def check_rejoin(self) -> None:
        """Raise JoinRefused unless this node may be discarded to join another cluster."""
        if not self.is_pristine():
            raise JoinRefused(
                "this node already holds data or has other members; start it on an empty data "
                "dir to join another cluster"
            )

    async def answer_join(
        self, target: str, *, replace: bool, token: str | None = None, api_token: str | None = None
    ) -> tuple[int, dict[str, Any], JoinInfo | None]:
        """``univrs cluster join``'s request to this node: join the cluster of ``target``.

        Returns the HTTP status and body to answer, and the join to start by restarting this
        node once the answer is sent (None: nothing to restart). Raises Conflict when the join
        is refused (the message says why). ``token``: the join token; ``api_token``: the
        caller's API token, which the join sends to the cluster (its admin endpoints check it).
        """
        try:
            info = await prepare(
                self.config, target, replace=replace, token=token, api_token=api_token
            )
        except JoinRefused as exc:
            raise Conflict(str(exc)) from None
        # A replace that is done already (the cluster lists this very incarnation) is a resume.
        replaced = not replace or info.bound == self.storage.incarnation
        if info.cluster_id == self.cluster_id and self.node_id in info.members and replaced:
            if self.node_id in self.status().membership.voters:
                return 200, {"state": "voter", "cluster_id": info.cluster_id}, None
            self.resume_join(info)  # a member still waiting to be promoted (restarted mid-join)
            state = self.join or {"state": "catching-up"}
            return 202, {**state, "cluster_id": info.cluster_id}, None
        if replace and self.status().last_index > 0:
            raise Conflict(
                f"{self.node_id} holds a log of its own: --replace takes over an id for a node "
                "that lost its data dir; start it on an empty data dir with "
                "--initial-cluster-state existing, then join with --replace"
            )
        try:
            self.check_rejoin()
        except JoinRefused as exc:
            raise Conflict(str(exc)) from None
        return 202, {"state": "restarting", "cluster_id": info.cluster_id}, info

    def describe(self) -> dict[str, Any]:
        """This node's own view as plain JSON-able data (for /v1/node/status and the CLI)."""
        return describe(self)

    def request_rejoin(self, info: JoinInfo) -> None:
        """Stop this (pristine) node and start it again empty, joining ``info``'s cluster."""
        self.check_rejoin()
        self._rejoin = info
        assert self._scope is not None
        self._scope.cancel()

    def resume_join(self, info: JoinInfo) -> bool:
        """Drive a join again if this node is a member still waiting to be promoted and nothing
        drives it now (it restarted mid-join). True if started."""
        if self.join.get("state") in ("adding", "catching-up", "promoting"):
            return False
        if self.node_id in self.status().membership.voters or self._nursery is None:
            return False
        if self.peer_map is not None:
            self.peer_map.hold_join_addresses(dict(info.addresses))
        self._nursery.start_soon(run_join, self, info)
        return True


async def run_node(
    config: NodeConfig,
    *,
    serve_api: bool = True,
    seed: int | None = None,
    join: str | None = None,
    api_token: str | None = None,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node until cancelled (see the module docstring).

    ``join``: the API address of a member of a cluster to join when this data dir is new;
    ``api_token``: an admin API token of that cluster, if it has auth on.
    Raises OSError, before the data dir is touched, when an address to listen on is taken."""
    addresses = [("raft_addr", config.raft_addr)]
    if serve_api:
        addresses.append(("api.addr", config.api_addr))
    await trio.to_thread.run_sync(check_listen_addresses, addresses)
    target = join
    info: JoinInfo | None = None
    first = True
    while True:
        node = await _run_once(
            config,
            serve_api=serve_api,
            seed=seed,
            join=target,
            join_info=info,
            api_token=api_token,
            task_status=task_status if first else trio.TASK_STATUS_IGNORED,
        )
        first = False
        if node is None or node._rejoin is None:
            return
        info = node._rejoin  # checked before we stopped: no second look after the wipe
        target = info.target
        log.info("restarting empty to join another cluster", extra={"target": target})
        await trio.to_thread.run_sync(wipe_raft_state, config)


def check_listen_addresses(addresses: list[tuple[str, str]]) -> None:
    """Bind each ``host:port`` once (as the listeners will, with SO_REUSEADDR) and let go:
    a start on a busy port fails here, before the data dir is created or bootstrapped,
    rather than after. Port 0 needs no check. Raises OSError naming the setting."""
    for what, addr in addresses:
        host, port = split_host_port(addr, allow_port_zero=True)
        if port == 0:
            continue
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise OSError(f"{what} {addr}: cannot resolve the host ({exc})") from None
        for family, kind, proto, _name, sockaddr in infos[:1]:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(sockaddr)
                except OSError as exc:
                    raise OSError(
                        exc.errno, f"{what} {addr} is not available: {exc.strerror}"
                    ) from None


async def _run_once(
    config: NodeConfig,
    *,
    serve_api: bool,
    seed: int | None,
    join: str | None,
    join_info: JoinInfo | None,
    task_status: trio.TaskStatus[Node],
    api_token: str | None = None,
) -> Node | None:
    security = check_tls(config)
    storage, initial = await trio.to_thread.run_sync(open_raw, config)
    node: Node | None = None
    state_env: StateEnv | None = None
    try:
        state = data_dir_state(storage, initial)
        if join_info is None and join is not None:
            join_info = await check_join(
                config, join, state, storage.cluster_id, api_token=api_token
            )
        stamp = join_info.cluster_id if join_info is not None and state == "new" else None
        bootstrap = state == "new" and stamp is None and config.initial_cluster_state == "new"
        if bootstrap and config.bootstrap:
            await check_bootstrap(config, new_cluster_id(config), storage.incarnation)
        elif state == "new" and stamp is None and not bootstrap:
            log.info(
                "data dir is empty and initial_cluster_state is existing: waiting to be joined "
                "(univrs cluster join <member-api> --api <this api> [--replace])",
                extra={"incarnation": storage.incarnation},
            )
        opened = await trio.to_thread.run_sync(
            lambda: finish_opening(storage, initial, config, stamp, bootstrap=bootstrap)
        )
        state_env = opened.state_env
        rng = random.Random(seed)
        core = RaftNode(
            config.node_id,
            rng=rng,
            config=config.raft_config(),
            initial=opened.initial,
            incarnation=storage.incarnation,
            # Hands what it restored to the install; on LMDB it restores into an environment.
            # The received snapshot's file is written while it is checked (prewrite).
            snapshot_check=SnapshotChecker(
                into=state_env.stage if state_env else None,
                unstage=state_env.unstage if state_env else None,
                prewrite=storage.prewrite_install,
            ),
        )
        snapshot_index = 0
        applied = Membership(voters=frozenset())
        if opened.snapshot is not None:
            meta, data = opened.snapshot
            core.snapshot_taken(meta, data, keep=config.snapshot_trailing_entries)  # for peers
            snapshot_index, applied = meta.index, meta.membership
        if opened.sm.last_applied_index > snapshot_index:  # a persisted state, resumed
            applied = applied_membership(opened.initial, opened.snapshot, opened.initial.applied)
        # Built in dependency order, each part whole, nothing rewired afterwards. The runtime's
        # inbox and view come first: the transport delivers into the inbox and checks hellos
        # against the view, the peer map and the metrics read the view, and the runtime then
        # gets the finished transport, peer map and metrics (docs/runtime.md, "Assembly").
        view = RuntimeView(core, applied_membership=applied)
        inbox = Inbox()
        metrics = NodeMetrics(
            view.status,
            storage=storage.statistics,
            snapshot_damage=storage.snapshot_damage.counts,
        )
        register_gc_metrics(metrics.registry)
        # This start, durable before anything is sent (every hello names it), and the peers'
        # starts this data dir accepted: an older copy of a peer's data dir is refused.
        start = await trio.to_thread.run_sync(begin_start, storage)
        start_records = await trio.to_thread.run_sync(load_start_records, storage)
        log.info(
            "start %d of incarnation %s",
            start.counter,
            storage.incarnation,
            extra={"start": start.counter, "boot": start.boot},
        )
        transport = transport_from_config(
            config,
            inbox=inbox.sender,
            leave=inbox.leave,
            rng=rng,
            settings=TransportSettings(),
            cluster_id=opened.cluster_id,
            incarnation=storage.incarnation,
            bound_incarnation=bound_incarnation(view),
            own_binding=own_binding(view, storage.incarnation),
            start=start,
            start_records=start_records,
            save_starts=functools.partial(save_start_records, storage),
        )
        transport.on_rtt = metrics.observe_peer_rtt
        # The members we learned of when asking to join (or, an empty data dir waiting to be
        # joined, the bootstrap members) stay reachable until a configuration listing us is
        # applied (see univrs/runtime/addresses.py).
        peer_map = PeerMap(
            config.node_id,
            publish=lambda peers: transport.set_peer_addresses(config.dial_addresses(peers)),
            tracked=lambda: [p.id for p in view.status().peers],
        )
        if join_info is not None:
            peer_map.hold_join_addresses(dict(join_info.addresses))
        elif state != "member":
            peer_map.hold_join_addresses(config.bootstrap_addresses())
        watch = MembershipWatch(
            config.node_id, peer_map, was_member=config.node_id in applied.members
        )
        runtime = RaftRuntime(
            core=core,
            sm=opened.sm,
            storage=storage,
            transport=RemovalGate(transport, watch),
            tick_seconds=config.tick_ms / 1000,
            on_membership=peer_map.on_membership,
            metrics=metrics,
            snapshot_threshold=config.snapshot_threshold,
            snapshot_keep=config.snapshot_trailing_entries,
            last_snapshot_index=snapshot_index,
            snapshot_scrub=ScrubPolicy(
                every=config.snapshot_scrub_interval_ms / 1000,
                first_after=10.0,
                rate=config.snapshot_scrub_rate,
            ),
            state_backend=PersistentState(state_env) if state_env is not None else MEMORY_STATE,
            packing=Packing.for_frames(
                enabled=config.batch_entries, max_payload_size=config.max_payload_size
            ),
            proposal_gather=config.batch_gather_ms / 1000,
            write_inline_bytes=config.inline_write_bytes,
            payload_versions=transport.peer_payload_versions,
            lease_holds=transport.peer_lease_holds,
            view=view,
            inbox=inbox,
            watch_hub=WatchHub(
                capacity=config.watch_history, max_watchers=config.watch_max_watchers
            ),
        )
        metrics.pending = lambda: runtime.pending_proposals
        node = Node(
            config=config,
            storage=storage,
            runtime=runtime,
            transport=transport,
            metrics=metrics,
            liveness=Liveness(runtime, ttl_ms=config.node_ttl_ms),
            cluster_id=opened.cluster_id,
            peer_map=peer_map,
            watch=watch,
        )
        transport.add_route(
            PROBE_PATH,
            probe_route(
                probe_answerer(node),
                TransportSettings().handshake_timeout,
                admit=transport.refuse_without_node_certificate,
            ),
        )
        async with trio.open_nursery() as nursery:
            node._scope = nursery.cancel_scope
            node._nursery = nursery
            forwarder = Forwarder(nursery=nursery, node_id=config.node_id, tls=transport.tls)
            node.store = RaftStateStore(node=node, forwarder=forwarder)
            if config.reconcile_resync_ms > 0:
                node.reconciler = Reconciler(
                    node.store, RuntimeLeadership(runtime), resync=config.reconcile_resync_ms / 1000
                )
            watch_metrics(metrics.registry, runtime.watch_hub, node.liveness, node.reconciler)
            node.raft_port = await nursery.start(transport.run)
            await nursery.start(runtime.run)
            nursery.start_soon(_follow_applied, runtime, watch)
            nursery.start_soon(node.liveness.run)
            if node.reconciler is not None:
                nursery.start_soon(node.reconciler.run)
            nursery.start_soon(watch_for_removal, node, watch)
            nursery.start_soon(hold_incarnations, view, transport)
            nursery.start_soon(log_refusals, runtime.status, runtime.wait_changed)
            nursery.start_soon(
                record_incarnations, runtime, transport.peer_incarnations, storage.incarnation
            )
            status = runtime.status()
            if status.membership.voters == {config.node_id}:
                await runtime.call(lambda c: c.campaign())  # a lone voter need not wait
            if serve_api:
                from univrs.api.server import serve_api as _serve

                node.api_port = await nursery.start(_serve, node)
            log.info(
                "node started",
                extra={
                    "cluster": opened.cluster_id,
                    "incarnation": storage.incarnation,
                    "raft": f"{_host(config.raft_addr)}:{node.raft_port}",
                    "api": f"{_host(config.api_addr)}:{node.api_port}" if serve_api else "-",
                    "term": status.term,
                    "last_index": status.last_index,
                    "transport": security,
                },
            )
            if join_info is not None and config.node_id not in status.membership.voters:
                nursery.start_soon(run_join, node, join_info)
            task_status.started(node)
    finally:
        # Synchronous on purpose: we may be cancelled, and closing LMDB is quick. Any storage
        # write in flight has finished: the writer's thread call is not cancellable.
        storage.close()
        if state_env is not None:
            state_env.close()
        log.info("node stopped")
    return node


async def _follow_applied(runtime: RaftRuntime, watch: MembershipWatch) -> None:
    """Show ``watch`` every applied configuration, and let the peer map drop the removed
    members the leader no longer replicates to (at the latest a second after)."""
    seen: Membership | None = None
    while True:
        applied = runtime.applied_membership
        if applied is not seen:
            seen = applied
            if runtime.view.listed_self:
                # A configuration applied since the last look listed us, though this one may
                # not (added, then removed, both applied between two looks: under load a
                # removed member never said so, tests/runtime/test_removal.py).
                watch.was_member = True
            watch.applied(applied)
        watch.peers.refresh()
        with trio.move_on_after(1.0):
            await runtime.wait_changed()


@attrs.define(eq=False)
class RuntimeLeadership:
    """The reconciler's view of this node's role (``univrs.service.reconcile.Leadership``)."""

    runtime: RaftRuntime

    def leading_term(self) -> int | None:
        status = self.runtime.status()
        return status.term if status.role is Role.LEADER else None

    async def wait_changed(self) -> None:
        await self.runtime.wait_changed()


def _host(addr: str) -> str:
    return addr.rsplit(":", 1)[0]


def describe(node: Node) -> dict[str, Any]:
    """This node's own view as plain JSON-able data (for /v1/node/status and the CLI).

    ``peers`` (on the leader) carry ``last_contact_s``: seconds since the leader last heard
    from that peer (None: never), as ``GET /v1/cluster/members`` reports it."""
    s = node.status()
    contact = {row["id"]: row.get("last_contact_s") for row in member_rows(node.runtime)}
    net = node.transport.statistics()
    return {
        "id": s.id,
        "incarnation": node.storage.incarnation,
        "cluster": cluster_fingerprint(node.cluster_id),  # not the id (docs/security.md)
        "role": s.role.value,
        "term": s.term,
        "leader": s.leader,
        "vote": s.vote,
        "commit_index": s.commit,
        "applied_index": s.applied,
        "last_index": s.last_index,
        "last_term": s.last_term,
        "first_index": s.first_index,
        "snapshot_index": node.runtime.last_snapshot_index,
        "raft_addr": node.config.raft_addr,
        "api_addr": node.config.api_addr,
        "voters": sorted(s.membership.voters),
        "learners": sorted(s.membership.learners),
        "join": node.join or None,
        "removed": node.removed,
        # Messages the core refused since start, by reason (docs/security.md, Core refusals).
        "refused": dict(s.refused),
        "transport": {
            "tls": node.transport.tls is not None,
            "rejected_connections": net.rejected_connections,
            "refused_certificates": net.refused_certificates,
            # Why the node stopped taking part: an older copy of its data dir (s15-start).
            "fenced": net.fenced,
            "messages_received": {p.id: p.messages_received for p in net.peers},
        },
        "peers": [
            {
                "id": p.id,
                "match_index": p.match,
                "next_index": p.next,
                "state": p.state,
                "lag": max(0, s.last_index - p.match),
                "recent_active": p.recent_active,
                "voter": p.voter,
                "last_contact_s": contact.get(p.id),
            }
            for p in s.peers
        ],
    }


__all__ = [
    "BootstrapRefused",
    "JoinRefused",
    "Node",
    "StorageError",
    "describe",
    "run_node",
]
