"""s15-review T1 on a real plaintext cluster: vote requests at the last term from a made-up id,
sent while the members are between leaders, must not stop elections for good.

Found from outside, against 4 `univrs node start` processes: a forger kept a connection to
each member and sent ``RequestVote(term=MAX_TERM)`` under a made-up id; once the leader was
killed, the survivors took the term while they followed no leader and were left where the
next term of every election is refused by every member. No leader was ever elected again, the
killed members restarted included (the term is durable). Now such a term is refused
(``univrs.raft.gate.MAX_TERM_STEP``; the core's side: tests/raft/test_raft_review15_term_jump.py).
"""

from __future__ import annotations

import pathlib

import trio
from trio_websocket import open_websocket_url

from tests.api.helpers import open_cluster, wait_until
from univrs.codec import encode_message
from univrs.net.hello import WIRE_VERSION, Hello, encode_hello
from univrs.raft import MAX_TERM
from univrs.raft.messages import RequestVote
from univrs.server.node import Node


async def _forge(node: Node, cluster_id: str) -> None:
    """Send a vote request at ``MAX_TERM`` under a made-up id to ``node``, over and over."""
    hello = Hello(
        version=WIRE_VERSION,
        cluster=cluster_id,
        src="mallory",
        dst=node.node_id,
        incarnation="0123456789abcdef",
    )
    vote = RequestVote(
        term=MAX_TERM,
        src="mallory",
        dst=node.node_id,
        last_log_index=1 << 40,
        last_log_term=1,
    )
    frame = encode_message(vote)
    while True:
        try:
            async with open_websocket_url(f"ws://127.0.0.1:{node.raft_port}/raft") as ws:
                await ws.send_message(encode_hello(hello))
                while True:
                    await ws.send_message(frame)
                    await trio.sleep(0.005)
        except Exception:  # the node closed the connection: dial again
            await trio.sleep(0.01)


def _refusals(node: Node) -> int:
    """Messages ``node``'s core refused so far, all reasons."""
    return sum(count for _, count in node.status().refused)


async def test_last_term_votes_from_a_made_up_id_between_leaders_do_not_stop_elections(
    tmp_path: pathlib.Path,
) -> None:
    async with open_cluster(tmp_path, 3) as cluster:
        leader = await cluster.wait_bound_leader()
        survivors = cluster.followers()
        before = {n.node_id: _refusals(n) for n in survivors}
        async with trio.open_nursery() as forger:
            for node in survivors:
                forger.start_soon(_forge, node, node.cluster_id)
            # The forgeries flow: each survivor refuses some (it follows a leader) first.
            await wait_until(
                lambda: all(_refusals(n) > before[n.node_id] for n in survivors) or None,
                "every survivor to refuse a forged vote",
            )
            await cluster.kill(leader.node_id)
            # The survivors lose their leader and elect one of them, with forgeries arriving
            # every few milliseconds throughout the leaderless window.
            new = await cluster.wait_leader(timeout=30.0)
            forger.cancel_scope.cancel()
        assert new.node_id != leader.node_id
        for node in survivors:
            st = node.status()
            assert st.term < 1000, st.term
            assert dict(st.refused).get("term", 0) > 0
        r = await cluster.http(
            new, "POST", "/v1/credits/mint", {"to_peer": "alice", "amount": 1, "reason": "t"}
        )
        assert r.status in (200, 201), r.body
