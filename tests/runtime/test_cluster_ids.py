"""Cluster ids are random, or derived from an operator-given token: never from the member list
alone (issue 12, item 7; docs/config.md, "Cluster ids")."""

from __future__ import annotations

import pytest

from univrs.config import BootstrapNode, NodeConfig
from univrs.errors import ConfigError
from univrs.server.datadir import new_cluster_id

BOOT = tuple(BootstrapNode(id=f"n{i}", addr=f"127.0.0.1:{7000 + i}") for i in (1, 2, 3))


def config(node: str = "n1", **kw: object) -> NodeConfig:
    return NodeConfig(node_id=node, raft_addr=f"127.0.0.1:{7000 + int(node[1:])}", **kw)  # type: ignore[arg-type]


def test_two_clusters_of_the_same_members_get_different_ids() -> None:
    a = new_cluster_id(config(bootstrap=BOOT, initial_cluster_token="alpha"))
    b = new_cluster_id(config(bootstrap=BOOT, initial_cluster_token="beta"))
    assert a != b


def test_every_initial_member_computes_the_same_id() -> None:
    ids = {
        new_cluster_id(config(n, bootstrap=BOOT, initial_cluster_token="t"))
        for n in ("n1", "n2", "n3")
    }
    assert len(ids) == 1


def test_a_multi_node_bootstrap_without_a_token_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="initial_cluster_token"):
        new_cluster_id(config(bootstrap=BOOT))
    assert new_cluster_id(config(bootstrap=BOOT, cluster_id="mine")) == "mine"


def test_a_single_node_gets_a_random_id() -> None:
    assert new_cluster_id(config()) != new_cluster_id(config())
