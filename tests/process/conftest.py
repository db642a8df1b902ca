"""Fixtures for tests that run real `univrs node start` processes on loopback.

Every process a test starts is stopped by PID at teardown, whatever the outcome. Deadlines are
generous: these run on two shared cores.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import pytest
import trio

from univrs.tools.devcluster import LocalCluster, NodeProc, wait_for

DEADLINE = 30.0  # seconds; waits poll a condition and fail with a message after this
T = TypeVar("T")


def univrs(
    *args: str,
    timeout: float = 180.0,
    env: Mapping[str, str] | None = None,
    cwd: pathlib.Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m univrs ARGS`` in a child process (stdin closed, output captured); ``env``
    adds to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "univrs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=None if env is None else {**os.environ, **env},
        cwd=cwd,
    )


async def cli(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    """``univrs(*args)`` in a worker thread, for trio tests."""
    return await trio.to_thread.run_sync(lambda: univrs(*args, timeout=timeout))


def call(
    node: NodeProc, method: str, path: str, body: Any = None, *, token: str | None = None
) -> tuple[int, Any]:
    """One JSON request to ``node``'s API (as ``token``'s holder): (status, document)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://{node.api_addr}{path}", data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


async def until(probe: Callable[[], T | None], what: str, timeout: float = DEADLINE * 2) -> T:
    """Poll the blocking ``probe`` in a worker thread until it returns something truthy (it
    may do HTTP); AssertionError naming ``what`` after ``timeout`` seconds."""
    try:
        return await trio.to_thread.run_sync(lambda: wait_for(probe, timeout, what, every=0.05))
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


class MakeCluster(Protocol):
    """The ``make_cluster`` fixture: a LocalCluster under tmp_path, stopped after the test."""

    def __call__(
        self, size: int = 3, extra_config: str = "", name: str = "cluster"
    ) -> LocalCluster:
        """A cluster of ``size`` node processes (not started)."""
        ...


def view(node: NodeProc) -> dict[str, Any]:
    """``node``'s own status (/v1/node/status); it must answer."""
    status = node.status()
    assert status is not None, f"{node.node_id} does not answer"
    return status


def serving_leader(cluster: LocalCluster, timeout: float = DEADLINE * 2) -> NodeProc:
    """The agreed leader, once every running node's API answers as well. A leader is elected
    as soon as a majority of the processes is up, so the last one's API may not listen yet: a
    CLI call to it was refused on a loaded machine (test_removing_the_leader_elects_another)."""
    leader = cluster.wait_leader(timeout)
    for node in cluster.nodes:
        if node.running():
            wait_for(node.status, timeout, f"{node.node_id}'s API")
    return leader


def leads(node: NodeProc) -> bool:
    """Does ``node`` answer and say it is the leader?"""
    status = node.status()
    return status is not None and status["role"] == "leader"


@pytest.fixture
def make_cluster(tmp_path: pathlib.Path) -> Iterator[MakeCluster]:
    made: list[LocalCluster] = []

    def make(size: int = 3, extra_config: str = "", name: str = "cluster") -> LocalCluster:
        cluster = LocalCluster.with_free_ports(
            tmp_path / name, size=size, extra_config=extra_config
        )
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop_all()
