"""The join check (``univrs.api.admin``): with a join token configured, knowing a member's
address is not enough to join; the token (constant-time compared) is. In-process nodes on
loopback, plaintext: the certificate path is in tests/process/test_tls_process.py."""

from __future__ import annotations

import pathlib

import attrs
import trio

from tests.api.helpers import WAIT, wait_until
from tests.runtime.nodes import Nodes, configs, settled_leader
from univrs.api.admin import JOIN_TOKEN_HEADER
from univrs.net.http import request_json

TOKEN = "s3cret-join-token-0123"


async def test_a_join_needs_the_token_once_one_is_configured(tmp_path: pathlib.Path) -> None:
    base = configs(tmp_path, members=1, spares=2)
    cfg = {
        "n1": attrs.evolve(base["n1"], join_token=TOKEN),
        "n2": attrs.evolve(base["n2"], join_token=TOKEN),  # shows the right token
        "n3": attrs.evolve(base["n3"], join_token="not-the-token-0123456"),
    }
    async with trio.open_nursery() as nursery:
        nodes = Nodes(nursery, cfg)
        await nodes.start("n1")
        leader = await settled_leader(nodes)
        api = nodes.api("n1")
        member = {"id": "n9", "raft_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:2"}
        for headers in ({}, {JOIN_TOKEN_HEADER: "wrong"}, {JOIN_TOKEN_HEADER: TOKEN[:-1]}):
            r = await request_json(api, "POST", "/v1/cluster/members", body=member, headers=headers)
            assert r.status == 403, r.body
            assert r.body["error"]["code"] == "permission-denied"
        assert "n9" not in leader.status().membership.members

        n3 = await nodes.start("n3", join=api)  # the wrong token: refused, and it says so
        await wait_until(lambda: n3.join.get("state") == "failed", "n3's join to fail", WAIT)
        assert "wrong join token" in n3.join["detail"]
        assert "n3" not in leader.status().membership.members

        n2 = await nodes.start("n2", join=api)  # the right token: in
        await wait_until(lambda: n2.join.get("state") == "voter", "n2 to join", WAIT * 2)
        assert leader.status().membership.voters == {"n1", "n2"}
        nursery.cancel_scope.cancel()


async def test_a_plaintext_loopback_node_without_a_token_admits_joins(
    tmp_path: pathlib.Path,
) -> None:
    """The local development cluster (no TLS, no token, loopback only) keeps working."""
    cfg = configs(tmp_path, members=1, spares=1)
    async with trio.open_nursery() as nursery:
        nodes = Nodes(nursery, cfg)
        await nodes.start("n1")
        leader = await settled_leader(nodes)
        n2 = await nodes.start("n2", join=nodes.api("n1"))
        await wait_until(lambda: n2.join.get("state") == "voter", "n2 to join", WAIT * 2)
        assert leader.status().membership.voters == {"n1", "n2"}
        nursery.cancel_scope.cancel()
