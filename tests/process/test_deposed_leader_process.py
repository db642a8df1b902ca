"""Requests in flight at a leader that is paused (SIGSTOP) past the election timeout, then
resumed deposed, on real node processes (what a Jepsen-style pause nemesis does).

While the leader is stopped, a write is sent to it (it sits in the socket), the others elect
a new leader, a second write is acknowledged by it, and then linearizable reads are sent to
the stopped old leader. When it resumes it must not answer those reads from its deposed term
(the value before the acknowledged write would be a stale read), and the write it held may
be acknowledged only if it really took effect (the final read shows it, or the acknowledged
write that came after it).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from tests.process.conftest import DEADLINE, MakeCluster, call, serving_leader
from univrs.tools.devcluster import NodeProc

pytestmark = pytest.mark.process


def spec(value: str) -> dict[str, Any]:
    return {"spec": {"name": "k", "image": "img", "replicas": 0, "labels": {"v": value}}}


def label(doc: Any) -> Any:
    return ((doc.get("spec") or {}).get("labels") or {}).get("v")


def test_a_resumed_deposed_leader_answers_nothing_stale(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=3, extra_config="reconcile_resync_ms = 0")
    cluster.start_all()
    old = serving_leader(cluster)
    assert call(old, "POST", "/v1/workloads", {"id": "k", **spec("a")})[0] == 201
    others = [n for n in cluster.nodes if n is not old]
    answers: dict[str, tuple[int, Any]] = {}

    def send(name: str, node: NodeProc, method: str, body: Any = None) -> threading.Thread:
        def run() -> None:
            answers[name] = call(node, method, "/v1/workloads/k", body)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    assert old.pid is not None
    os.kill(old.pid, signal.SIGSTOP)
    try:
        threads = [send("held write", old, "PUT", spec("held"))]
        new = cluster.wait_leader(DEADLINE * 2, among=others)
        status, _ = call(new, "PUT", "/v1/workloads/k", spec("b"))
        assert status == 200
        # Invoked after "b" was acknowledged: any answer must show "b" or a later write.
        threads += [send(f"read {i}", old, "GET") for i in range(3)]
    finally:
        os.kill(old.pid, signal.SIGCONT)
    for thread in threads:
        thread.join(DEADLINE * 3)
        assert not thread.is_alive(), "a request to the resumed node got no answer"
    for i in range(3):
        status, doc = answers[f"read {i}"]
        if status == 200:
            assert label(doc) in ("b", "held"), (f"read {i}", label(doc), answers)
        else:
            assert status in (503, 504), (f"read {i}", status, doc)
    final_status, final = call(serving_leader(cluster), "GET", "/v1/workloads/k")
    assert final_status == 200
    if answers["held write"][0] == 200:
        # Acknowledged: it took effect, before "b" (then "b" shows) or after it.
        assert label(final) in ("b", "held"), (label(final), answers)
    else:
        assert answers["held write"][0] in (503, 504), answers["held write"]
