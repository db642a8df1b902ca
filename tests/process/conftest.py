"""Fixtures for tests that run real `univrs node start` processes on loopback.

Every process a test starts is stopped by PID at teardown, whatever the outcome. Deadlines are
generous: these run on two shared cores.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from univrs.tools.devcluster import LocalCluster, NodeProc

DEADLINE = 30.0  # seconds; waits poll a condition and fail with a message after this


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/process" in str(item.fspath):
            item.add_marker(pytest.mark.process)
