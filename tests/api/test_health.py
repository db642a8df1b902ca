"""/livez and /readyz (univrs/api/health.py): the checks one by one on a fake node, and the
endpoints on a real in-process cluster that loses its quorum."""

from __future__ import annotations

import pathlib
from types import SimpleNamespace
from typing import Any

import attrs
import trio

from tests.api.helpers import open_cluster, wait_until
from univrs.api import health
from univrs.config import NodeConfig
from univrs.raft.messages import Membership
from univrs.raft.ready import Role, Status


def _status(**kw: Any) -> Status:
    base: dict[str, Any] = dict(
        id="n1",
        role=Role.LEADER,
        term=3,
        vote="n1",
        leader="n1",
        commit=10,
        applied=10,
        persisted=10,
        last_index=10,
        last_term=3,
        first_index=1,
        membership=Membership(voters=frozenset({"n1"})),
    )
    base.update(kw)
    return Status(**base)


def _node(tmp_path: pathlib.Path, **kw: Any) -> Any:
    state = {"status": _status(**kw)}
    config = NodeConfig(node_id="n1", data_dir=tmp_path)
    return SimpleNamespace(
        node_id="n1", config=config, removed=False, status=lambda: state["status"], state=state
    )


async def test_ready_leader_passes_every_check(tmp_path: pathlib.Path) -> None:
    ready, body = await health.readiness(_node(tmp_path), 0, 0.0)
    assert ready, body
    assert body["status"] == "ready"
    assert set(body["checks"].values()) == {"ok"}


async def test_each_failing_check_gives_its_reason(tmp_path: pathlib.Path) -> None:
    node = _node(tmp_path, role=Role.FOLLOWER, leader=None)
    ready, body = await health.readiness(node, None, 0.0)
    assert not ready and body["reason"] == "leader: no leader"

    # A follower that has not heard from its leader for longer than two election timeouts.
    node = _node(tmp_path, role=Role.FOLLOWER, leader="n1", id="n2")
    ready, body = await health.readiness(node, 10_000, 0.0)
    assert not ready and body["reason"].startswith("leader_contact: last heard from leader n1")

    # Applied far behind the commit index.
    node = _node(tmp_path, commit=5000, applied=10)
    ready, body = await health.readiness(node, 0, 0.0)
    assert not ready and body["reason"] == "caught_up: applied 10, 4990 entries behind commit 5000"

    # A stuck log write.
    ready, body = await health.readiness(_node(tmp_path), 0, health.STORAGE_STALL_S + 1)
    assert not ready and body["reason"].startswith("storage: a log write has been outstanding")

    # A data dir that cannot be written.
    missing = _node(tmp_path / "gone")
    ready, body = await health.readiness(missing, 0, 0.0)
    assert not ready and "is not writable" in body["reason"]


async def test_storage_watch_notices_a_tail_that_stays_unpersisted(
    tmp_path: pathlib.Path, autojump_clock: Any
) -> None:
    node = _node(tmp_path, persisted=8, last_index=10)
    watch = health.StorageWatch(node)
    watch.sample()
    await trio.sleep(5)
    node.state["status"] = attrs.evolve(node.state["status"], persisted=9, last_index=12)
    watch.sample()  # moving: the clock restarts
    assert watch.stalled_for() == 0.0
    await trio.sleep(12)
    watch.sample()
    assert watch.stalled_for() >= 12
    node.state["status"] = attrs.evolve(node.state["status"], persisted=12)
    watch.sample()
    assert watch.stalled_for() == 0.0


async def test_livez_and_readyz_on_a_cluster_that_loses_its_quorum(
    tmp_path: pathlib.Path,
) -> None:
    async with open_cluster(tmp_path) as cluster:

        async def all_ready() -> bool:
            for node in cluster.running():
                if (await cluster.http(node, "GET", "/readyz")).status != 200:
                    return False
            return True

        await wait_until(all_ready, "every node to be ready")
        survivor = cluster.followers()[0]
        ok = await cluster.http(survivor, "GET", "/readyz")
        assert ok.body["status"] == "ready" and ok.body["checks"]["caught_up"] == "ok", ok.body
        for node in list(cluster.running()):
            if node is not survivor:
                await cluster.kill(node.node_id)

        async def not_ready() -> Any:
            r = await cluster.http(survivor, "GET", "/readyz")
            return r if r.status == 503 else None

        answer = await wait_until(not_ready, "the survivor to say it is not ready")
        assert answer.body["status"] == "not-ready"
        assert answer.body["reason"].split(":")[0] in ("leader", "leader_contact"), answer.body
        live = await cluster.http(survivor, "GET", "/livez")
        assert live.status == 200 and live.body == {"status": "live", "id": survivor.node_id}
