"""``Objects.load`` of parts that are not staged, on LMDB tables (``objects_in_lmdb``): the
fill runs in one batch. Before, a put of the instances' index began a write transaction of
its own while the instances' load held one, and LMDB refused it ("Attempt to start a write
transaction while another write transaction is active"): scripts/bench_scale.py --lmdb
failed so."""

from __future__ import annotations

import pathlib

from tests.runtime.state_envs import Clock, apply_next
from univrs.sm import (
    ClusterStateMachine,
    CreateInstance,
    CreateWorkload,
    RegisterNode,
    WorkloadSpec,
)
from univrs.sm.model import InstanceSpec, NodeInfo
from univrs.storage.sm_journal import objects_in_lmdb


def test_parts_load_into_lmdb_tables(tmp_path: pathlib.Path) -> None:
    sm = ClusterStateMachine()
    clock = Clock()
    apply_next(sm, clock, RegisterNode(info=NodeInfo(id="n0")))
    for n in range(20):
        apply_next(sm, clock, CreateWorkload(id=f"w{n}", spec=WorkloadSpec(name="w", image="i")))
        spec = InstanceSpec(workload_id=f"w{n}", node_id="n0" if n % 2 else None)
        apply_next(sm, clock, CreateInstance(id=f"i{n}", spec=spec))
    objects = objects_in_lmdb(str(tmp_path / "objects"), sync=False)
    problems = objects.load(sm.stored_workloads(), sm.stored_instances(), sm.stored_nodes())
    assert problems == []
    assert objects.counts() == (20, 20, 1)
    assert objects.problems() == []
