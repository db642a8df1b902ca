"""The bench's local cluster starts with every node up as itself (univrs/tools/started.py).

Session 19: a bench run's n1 exited at start because another process bound its API port
between the pick (``free_ports``) and the node's bind; the other two elected a leader, the
bench measured without n1 and took the metrics of whoever held the port for n1's."""

from __future__ import annotations

import pathlib
import socket

import pytest

from univrs.bench import client as bench
from univrs.tools import devcluster
from univrs.tools import ports as port_picker
from univrs.tools.started import NodeExited


def test_a_node_whose_port_was_taken_before_it_bound_is_started_again_elsewhere(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: list[socket.socket] = []
    real = port_picker.free_ports

    def racing(count: int, **kw: object) -> list[int]:
        ports = real(count)
        if not held:  # another process binds n1's API port after the pick, before n1 does
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", ports[1]))
            s.listen()
            held.append(s)
        return ports

    monkeypatch.setattr(devcluster, "free_ports", racing)
    folder = tmp_path / "univrs"
    cluster, _, pids, apis = bench.start_cluster(folder, 3)
    try:
        taken = f"127.0.0.1:{held[0].getsockname()[1]}"
        assert [n.node_id for n in cluster.nodes if not n.running()] == []
        assert sorted(pids) == ["n1", "n2", "n3"] and apis["n1"] != taken
    finally:
        cluster.stop_all()
        held[0].close()
    # The first attempt's files are kept: n1's log says why it exited.
    assert "is not available" in (tmp_path / "univrs-attempt1" / "n1.log").read_text()


def test_only_a_taken_port_is_worth_another_attempt() -> None:
    taken = "error: cannot start the node: [Errno 98] api.addr 127.0.0.1:1 is not available: x"
    assert NodeExited("n1", 1, taken).port_taken
    assert not NodeExited("n1", 1, "error: cannot start the node: bad config").port_taken
