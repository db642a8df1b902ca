"""A port taken by another process between the pick and the node's bind, in every harness that
starts node processes (univrs/tools/started.py).

Picked ports (``LocalCluster.with_free_ports``): the process tests' clusters and the chaos
runner start again on other ports. Fixed ports (a node restarted on its own,
``scripts/cluster --base-port``): a ``NodeExited`` naming the taken address at once, not a
readiness timeout. Each test binds the port after the pick, before the node does."""

from __future__ import annotations

import contextlib
import io
import pathlib
import socket
from collections.abc import Iterator

import pytest
import trio

from univrs.chaos.report import PASS
from univrs.chaos.runner import RunOptions, run_scenario
from univrs.chaos.scenario import parse
from univrs.tools import cluster_cli, devcluster
from univrs.tools import ports as port_picker
from univrs.tools.started import NodeExited

from .conftest import DEADLINE, MakeCluster

pytestmark = pytest.mark.process


def hold(port: int) -> socket.socket:
    """What another process does: listen on ``port``."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a stopped node's TIME_WAITs
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


@pytest.fixture
def first_pick_taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[socket.socket]]:
    """The first pick of a cluster's ports has n2's API port (index 3) taken at once."""
    held: list[socket.socket] = []
    real = port_picker.free_ports

    def racing(count: int, **kw: object) -> list[int]:
        ports = real(count)
        if not held:
            held.append(hold(ports[3]))
        return ports

    monkeypatch.setattr(devcluster, "free_ports", racing)
    yield held
    for s in held:
        s.close()


def test_a_process_test_cluster_starts_again_on_other_ports(
    make_cluster: MakeCluster, first_pick_taken: list[socket.socket], tmp_path: pathlib.Path
) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    taken = f"127.0.0.1:{first_pick_taken[0].getsockname()[1]}"
    assert cluster.node("n2").api_addr != taken
    assert all(n.running() for n in cluster.nodes)
    cluster.wait_leader(DEADLINE)
    # The first attempt's files are kept: n2's log says which address was taken.
    assert f"{taken} is not available" in (tmp_path / "cluster-attempt1" / "n2.log").read_text()


def test_a_node_restarted_on_its_taken_port_fails_naming_it(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    n2 = cluster.node("n2")
    cluster.stop(n2)
    port = n2.api_addr.rsplit(":", 1)[1]
    with hold(int(port)):
        cluster.start(n2)
        with pytest.raises(NodeExited, match=f"{n2.api_addr} is not available"):
            cluster.wait_ready([n2], DEADLINE)
        with pytest.raises(NodeExited, match=f"{n2.api_addr} is not available"):
            cluster.wait_leader(DEADLINE)


def test_scripts_cluster_start_names_the_taken_port(tmp_path: pathlib.Path) -> None:
    (api,) = port_picker.free_ports(1)
    base = api - 101  # n1 listens for its API on base + 101
    args = ["--dir", str(tmp_path / "c"), "--nodes", "1", "--base-port", str(base)]
    out = io.StringIO()
    try:
        with hold(api), contextlib.redirect_stdout(out):
            code = cluster_cli.main(["start", "--insecure", *args])
    finally:
        with contextlib.redirect_stdout(io.StringIO()):
            cluster_cli.main(["stop", *args])
    assert code == 1
    assert "is not available" in out.getvalue() and "--base-port" in out.getvalue()


async def test_a_chaos_run_starts_again_on_other_ports(
    tmp_path: pathlib.Path, first_pick_taken: list[socket.socket]
) -> None:
    scenario = parse(
        {
            "name": "taken",
            "duration": 2,
            "recovery": 0,
            "cluster": {"proxies": True},
            "workload": {"clients": 1, "keys": 2, "rate": 10, "timeout": 2.0},
        }
    )
    lines: list[str] = []
    with trio.fail_after(120):
        result = await run_scenario(
            scenario, tmp_path / "out", RunOptions(check_timeout=30.0), lines.append
        )
    assert result.verdict == PASS, (result.reasons, lines)
    taken = f"127.0.0.1:{first_pick_taken[0].getsockname()[1]}"
    log = (tmp_path / "out" / "cluster-attempt1" / "n2.log").read_text()
    assert f"{taken} is not available" in log
