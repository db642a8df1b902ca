"""Write outcomes on the serving node (issue 10, bug 5): what is retried, what is "unknown".

``ApiService`` runs here on real ``RaftRuntime`` drivers over the in-memory cluster of
``tests.runtime.memcluster`` (trio's autojump clock), with a forwarder that hands a forwarded
request straight to the leader's ``ApiService``. The scenario of the bug: writes are in flight
on a leader whose inbound links drop; the others elect a new leader that commits them, writes
on and compacts past them; the old leader then installs the new leader's snapshot, which
covers its pending proposals. A keyless write must come back as ``outcome-unknown`` and must
not be proposed again (a mint would apply twice, an If-Match update would answer 409).
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio

from tests.runtime.memcluster import MemCluster, create, wait_leader, wait_until
from univrs.api.auth import ANONYMOUS, Caller
from univrs.api.service import ApiService
from univrs.api.store import RaftStateStore
from univrs.client.protocol import MAX_HOPS
from univrs.errors import (
    ConnectionLost,
    NotLeader,
    SessionExpired,
    UnivrsError,
)
from univrs.raft.ready import Status
from univrs.runtime.driver import RaftRuntime

IDS = ["a", "b", "c"]
SPEC = {"name": "web", "image": "nginx:1"}


class _NoPeers:
    def peer(self, node_id: str) -> Any:
        raise KeyError(node_id)


@attrs.define(eq=False)
class _Transport:
    def statistics(self) -> _NoPeers:
        return _NoPeers()


class _Config:
    # The NodeConfig fields ApiService reads: auth off, the default limits.
    auth_enabled = False
    session_open_rate = 20.0
    session_open_burst = 200
    max_connections_per_address = 256
    quota_backend_bytes = 2 * 1024**3

    def dial_addresses(self, advertised: dict[str, str]) -> dict[str, str]:
        return advertised


@attrs.define(eq=False)
class FakeNode:
    """The parts of ``univrs.server.node.Node`` that ``ApiService`` uses."""

    runtime: RaftRuntime
    config: _Config = attrs.field(factory=_Config)
    transport: _Transport = attrs.field(factory=_Transport)
    metrics: Any = None

    @property
    def node_id(self) -> str:
        return self.runtime.node_id

    def status(self) -> Status:
        return self.runtime.status()


@attrs.define(eq=False)
class MemForwarder:
    """Forwards to the leader's ApiService in this process (addresses are node ids); a link
    that is down refuses before sending. ``script`` errors are raised first, one per call."""

    nursery: trio.Nursery
    cluster: MemCluster
    source: str
    services: dict[str, ApiService]
    script: list[UnivrsError] = attrs.field(factory=list)
    calls: int = 0

    async def call(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        key: tuple[str, int] | None,
        deadline: float,
        caller: Caller = ANONYMOUS,
        minimal: bool = False,
    ) -> tuple[Any, dict[str, Any] | None]:
        self.calls += 1
        if self.script:
            raise self.script.pop(0)
        down = self.cluster.cut | self.cluster.deaf
        if self.source in down or address in down:
            lost = ConnectionLost(f"no link from {self.source} to {address}")
            lost.outcome_unknown = False
            raise lost
        timeout = deadline - trio.current_time() - 0.05
        return await self.services[address].execute(
            op,
            args,
            key=key,
            timeout=timeout,
            hops=MAX_HOPS,
            caller=caller,
            answer="minimal" if minimal else None,
        )


async def api_cluster(
    nursery: trio.Nursery, max_payload_versions: dict[str, int] | None = None
) -> tuple[MemCluster, dict[str, ApiService]]:
    """Three nodes with an ``ApiService`` each; ``max_payload_versions``: members that play
    a node of older code (the newest entry payload version they apply)."""
    cluster = MemCluster.build(nursery, IDS)
    cluster.max_payload_versions.update(max_payload_versions or {})
    # Deep enough that the concurrent writes of a test are all appended, even to a leader that
    # cannot commit them.
    cluster.proposal_depth = 8
    services: dict[str, ApiService] = {}
    for nid in IDS:
        runtime = await cluster.start(nid)
        forwarder = MemForwarder(nursery=nursery, cluster=cluster, source=nid, services=services)
        services[nid] = ApiService(
            RaftStateStore(
                node=FakeNode(runtime),  # type: ignore[arg-type]
                forwarder=forwarder,  # type: ignore[arg-type]
            )
        )
    return cluster, services


async def outcome_of(
    nursery: trio.Nursery, service: ApiService, op: str, args: dict[str, Any], **kw: Any
) -> list[Any]:
    """Start ``service.execute`` in the background; the list gets its result or its error."""
    out: list[Any] = []

    async def run() -> None:
        try:
            out.append((await service.execute(op, args, timeout=60.0, **kw))[0])
        except UnivrsError as exc:
            out.append(exc)

    nursery.start_soon(run)
    await trio.sleep(0)
    return out


async def test_writes_covered_by_a_snapshot_are_applied_once_and_answered_unknown(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    cluster, services = await api_cluster(nursery)
    old = await wait_leader(cluster)
    api = services[old.node_id]
    created, _ = await api.execute("workload.create", {"id": "w", "spec": SPEC})
    session, _ = await api.execute("session.open", {})
    cid = session["client_id"]

    cluster.deaf.add(old.node_id)
    mint = await outcome_of(
        nursery, api, "credits.mint", {"to_peer": "p", "amount": 1, "reason": "keyless"}
    )
    update = await outcome_of(
        nursery,
        api,
        "workload.update",
        {"id": "w", "spec": {**SPEC, "image": "nginx:2"}, "expected_version": created["version"]},
    )
    keyed = await outcome_of(
        nursery, api, "credits.mint", {"to_peer": "p", "amount": 10, "reason": "keyed"},
        key=(cid, 1),
    )  # fmt: skip
    forwarded = await outcome_of(
        nursery, api, "credits.mint", {"to_peer": "p", "amount": 100, "reason": "forwarded"},
        key=(cid, 2), hops=MAX_HOPS,
    )  # fmt: skip

    others = [i for i in IDS if i != old.node_id]
    new = await wait_leader(cluster, others)
    await wait_until(lambda: new.sm.balance("p") == 111, "the new leader to commit the writes")
    for i in range(5):
        await new.propose(create(f"after-{i}"))
    meta = await new.take_snapshot()
    assert meta is not None and new.status().first_index > meta.index
    assert not (mint or update or keyed or forwarded)
    cluster.deaf.clear()
    await wait_until(lambda: mint and update and keyed and forwarded, "every write's answer")

    # Keyless: the node cannot know, says so, and does not propose again.
    assert isinstance(mint[0], UnivrsError) and mint[0].code == "outcome-unknown", mint
    assert isinstance(update[0], UnivrsError) and update[0].code == "outcome-unknown", update
    assert mint[0].http_status == 503 and "cannot tell whether it applied" in mint[0].message
    # Keyed: retried through the new leader, answered from the session (the first response).
    assert keyed[0]["balance"] >= 111 and keyed[0]["version"] > created["version"], keyed
    # A forwarded request (hops=1) may not be forwarded again; its refusal is not "not-leader"
    # (which says nothing applied) once its first attempt may have applied.
    assert isinstance(forwarded[0], UnivrsError) and forwarded[0].code == "outcome-unknown"

    def settled() -> bool:
        indexes = {r.applied_index for r in cluster.runtimes.values()}
        return len(indexes) == 1 and new.status().commit in indexes

    await new.propose(create("last"))
    await wait_until(settled, "every node to apply everything")
    for runtime in cluster.runtimes.values():
        assert runtime.sm.balance("p") == 111  # each mint applied exactly once
        workload = runtime.sm.get_workload("w")
        assert workload is not None and workload.spec.image == "nginx:2"


@attrs.frozen
class ForwardingFollower:
    """A new API cluster's leader and a follower, its scriptable forwarder, and a connection
    loss after sending (the forwarded write may have applied: ``outcome_unknown``)."""

    cluster: MemCluster
    services: dict[str, ApiService]
    leader: RaftRuntime
    follower: ApiService
    forwarder: MemForwarder
    sent_then_lost: ConnectionLost


async def forwarding_follower(nursery: trio.Nursery) -> ForwardingFollower:
    cluster, services = await api_cluster(nursery)
    leader = await wait_leader(cluster)
    follower = next(services[i] for i in IDS if i != leader.node_id)
    forwarder = follower.store.forwarder
    assert isinstance(forwarder, MemForwarder)
    sent_then_lost = ConnectionLost("the leader went away")
    sent_then_lost.outcome_unknown = True
    return ForwardingFollower(cluster, services, leader, follower, forwarder, sent_then_lost)


async def test_a_keyed_retry_refused_after_an_unknown_attempt_is_unknown(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A follower forwards a keyed write; the connection breaks after sending (it may have
    applied); the retry is answered ``session-expired``. That answer is about the retry only:
    the caller must hear "unknown", or a client would send the write again under a new
    session. The same for a retry that finds no leader until the deadline."""
    f = await forwarding_follower(nursery)
    cluster, services, leader = f.cluster, f.services, f.leader
    follower, forwarder, sent_then_lost = f.follower, f.forwarder, f.sent_then_lost
    args = {"to_peer": "p", "amount": 1, "reason": "r"}

    forwarder.script = [sent_then_lost, SessionExpired("session 'c9' is unknown")]
    with pytest.raises(UnivrsError) as info:
        await follower.execute("credits.mint", args, key=("c9", 1))
    assert info.value.code == "outcome-unknown" and forwarder.calls == 2

    # Keyless: an attempt that may have applied is never retried.
    forwarder.calls = 0
    forwarder.script = [sent_then_lost]
    with pytest.raises(UnivrsError) as info:
        await follower.execute("credits.mint", args)
    assert info.value.code == "outcome-unknown" and forwarder.calls == 1
    assert leader.sm.balance("p") == 0

    forwarder.calls = 0
    forwarder.script = [sent_then_lost, NotLeader(leader=None)]
    # After the refusal the follower is alone: no leader until the deadline.
    cluster.cut.update(i for i in IDS if services[i] is not follower)
    with pytest.raises(UnivrsError) as info:
        await follower.execute("credits.mint", args, key=("c9", 2), timeout=2.0)
    assert info.value.code in ("outcome-unknown", "timeout"), info.value
