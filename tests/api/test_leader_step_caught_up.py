"""A write the leader answers from its own state (``Write.leader_step``: a node's heartbeat)
runs only once that state applied an entry of the leader's own term (univrs/api/writes.py
``check_caught_up``). Before, a leader just elected answered a heartbeat from a state that
could lack a node registered under the previous leader: "node 'm1' not found" for a node whose
registration was acknowledged (seen once in CI, tests/api/test_liveness.py, after a leader
kill). Here every state is made to look behind its leader's term; the heartbeat is refused
``unavailable`` (retried by the client) on both write paths, and answered once it is not."""

from __future__ import annotations

import pathlib

import pytest

from tests.api.helpers import BY_HAND, open_cluster
from univrs.client import Unavailable, open_client
from univrs.sm.state import ClusterStateMachine


async def test_a_leader_step_waits_for_the_leaders_own_term(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        open_cluster(tmp_path, 3, node_ttl_ms=1500, **BY_HAND) as cluster,
        open_client(cluster.client_addresses(), timeout=20) as client,
    ):
        await client.register_node("m1")
        assert (await client.heartbeat_node("m1"))["status"] == "ready"
        real = ClusterStateMachine.last_applied_term
        monkeypatch.setattr(ClusterStateMachine, "last_applied_term", property(lambda _: 0))
        async with open_client(cluster.client_addresses(), timeout=1, fail_fast=True) as quick:
            with pytest.raises(Unavailable, match="earlier terms"):
                await quick.heartbeat_node("m1")  # the fast protocol's frame path
        leader = await cluster.wait_leader()
        answer = await cluster.http(leader, "POST", "/v1/nodes/m1/heartbeat", body={})
        assert answer.status == 503, answer.body  # REST: ``attempt_write``
        assert "earlier terms" in str(answer.body)
        monkeypatch.setattr(ClusterStateMachine, "last_applied_term", real)
        assert (await client.heartbeat_node("m1"))["status"] == "ready"
