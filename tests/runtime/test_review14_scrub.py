"""s14-review: ``univrs state-scrub`` and the per-workload counts rows (s14-page).

The counts rows are derived data in ``state.lmdb`` (no checksum, as every row there) and not
in the state digest the scrub compares: a counts row changed to another valid row (a flipped
bit) gave wrong workload statuses on every page and every watch event, kept so by apply (it
adds and subtracts, never recounts; a count gone below zero then fails the apply), while the
scrub said intact. The scrub now recounts them from the instance rows."""

from __future__ import annotations

import pathlib

import lmdb
import pytest
import trio

from tests.api.helpers import Cluster, make_configs
from univrs.server.node import Node
from univrs.server.state_scrub import scrub_state
from univrs.sm import (
    CreateInstance,
    CreateWorkload,
    Envelope,
    InstanceSpec,
    WorkloadSpec,
)
from univrs.storage.sm_store import COUNTS_ROW

pytestmark = pytest.mark.timeout(120)


async def _data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A stopped one-node data dir on the lmdb backend with workloads and their instances."""
    configs = make_configs(tmp_path, 1, state_backend="lmdb", snapshot_threshold=12)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=configs)
        node: Node = await cluster.start("n1")
        await cluster.wait_leader()
        for n in range(6):
            spec = WorkloadSpec(name=f"w{n}", image="img", replicas=3)
            await node.store.run(Envelope(command=CreateWorkload(id=f"w{n}", spec=spec)))
        for n in range(18):
            instance = InstanceSpec(workload_id=f"w{n % 6}")  # on no node: kept as it is
            await node.store.run(Envelope(command=CreateInstance(id=f"i{n:02}", spec=instance)))
        await cluster.kill("n1")
    return tmp_path / "n1"


def _counts_db(data_dir: pathlib.Path, change: bytes | None = None) -> list[tuple[int, ...]]:
    """The counts rows (after setting workload w1's to ``change`` if given)."""
    env = lmdb.open(str(data_dir / "state.lmdb"), max_dbs=32, subdir=True)
    try:
        db = env.open_db(b"workload_counts")
        with env.begin(write=change is not None) as txn:
            if change is not None:
                assert txn.get(b"w1", db=db) is not None
                txn.put(b"w1", change, db=db)
            return [COUNTS_ROW.unpack(bytes(v)) for _, v in txn.cursor(db)]
    finally:
        env.close()


async def test_an_intact_state_with_instances_is_intact(tmp_path: pathlib.Path) -> None:
    data_dir = await _data_dir(tmp_path)
    rows = _counts_db(data_dir)
    assert len(rows) == 6 and sum(map(sum, rows)) == 18
    found = scrub_state(data_dir)
    assert found.intact is True, found


async def test_a_counts_row_changed_to_another_valid_row_is_damage(
    tmp_path: pathlib.Path,
) -> None:
    data_dir = await _data_dir(tmp_path)
    (_w0, w1, *_) = _counts_db(data_dir)
    wrong = (w1[0] - 1, w1[1] + 1, *w1[2:])  # one pending instance counted as running
    _counts_db(data_dir, COUNTS_ROW.pack(*wrong))
    found = scrub_state(data_dir)
    assert found.intact is False, found
    assert "counts" in found.reason and "w1" in found.reason
    # The digests agree (the counts are not in it): only the recount sees it.
    assert found.state_digest == found.expected_digest
