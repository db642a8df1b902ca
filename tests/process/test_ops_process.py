"""Operator frictions seen with real processes (issue 13): a busy port, `scripts/cluster
restart`."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys
from collections.abc import Callable

from univrs.tools.devcluster import LocalCluster

from .conftest import DEADLINE


def test_a_busy_port_fails_before_the_data_dir_is_created(tmp_path: pathlib.Path) -> None:
    """The node bootstrapped a data dir, then failed to bind, leaving a one-node cluster's
    identity behind; now it checks its addresses first."""
    for flag in ("--raft-addr", "--api-addr"):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = f"127.0.0.1:{busy.getsockname()[1]}"
            addrs = {"--raft-addr": "127.0.0.1:0", "--api-addr": "127.0.0.1:0", flag: taken}
            data_dir = tmp_path / flag.strip("-")
            result = subprocess.run(
                [sys.executable, "-m", "univrs", "node", "start", "--data-dir", str(data_dir),
                 *(x for kv in addrs.items() for x in kv)],
                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert f"{taken} is not available" in result.stderr, result.stderr
        assert not data_dir.exists()


def test_restart_returns_once_the_node_is_ready(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    """`scripts/cluster restart n2` returned before n2 answered; `LocalCluster.restart` (what
    it runs) now waits for its /readyz."""
    cluster: LocalCluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader(DEADLINE)
    follower = next(n for n in cluster.nodes if n is not leader)
    cluster.restart(follower, timeout=DEADLINE)
    ready, why = follower.readiness()  # no wait: it is ready when restart returns
    assert ready, why
    view = follower.status()
    assert view is not None and view["leader"] is not None
