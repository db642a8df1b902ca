"""s14-review: the staging's counts rows (s14-page, ``sm_ingest._Stager``) at its batch
bounds. The stager collects the counts of runs of instances of one workload and appends them
``_INDEX_BATCH`` rows at a time, merging a run that comes out of workload order with the row
already there; with the bound made tiny, every boundary (a run ending a full batch, a run
out of order right after a flush, one repeating the last workload counted) is crossed by a
few dozen instances, and the rows must equal a recount of the instances."""

from __future__ import annotations

import pathlib
import random
from typing import Any

import pytest

from tests.sm.helpers import Log, node_info, spec
from univrs.runtime.snapshots import capture
from univrs.sm import (
    ClusterStateMachine,
    CreateInstance,
    CreateWorkload,
    InstanceSpec,
    InstanceStatus,
    RegisterNode,
    UpdateInstanceStatus,
)
from univrs.storage import sm_ingest, sm_tables
from univrs.storage.sm_store import COUNTS_ROW, LmdbStore
from univrs.storage.sm_tables import StateEnv

STATUSES = list(InstanceStatus)


def _state(rng: random.Random, ordered: bool) -> ClusterStateMachine:
    """Workloads w00..w11 and 60 instances whose ids follow their workloads' order
    (``ordered``) or not, in several statuses."""
    log = Log()
    log(RegisterNode(info=node_info("n1")))
    for w in range(12):
        log(CreateWorkload(id=f"w{w:02}", spec=spec(f"a{w}", replicas=1)))
    owners = sorted(rng.randrange(12) for _ in range(60)) if ordered else None
    for n in range(60):
        w = owners[n] if owners is not None else rng.randrange(12)
        instance = InstanceSpec(workload_id=f"w{w:02}", node_id="n1")
        log(CreateInstance(id=f"i{n:03}", spec=instance))
        status = rng.choice(STATUSES)
        if status is not InstanceStatus.PENDING:
            log(UpdateInstanceStatus(id=f"i{n:03}", status=status))
    return log.sm


@pytest.mark.parametrize("batch", [1, 2, 3, 5])
@pytest.mark.parametrize("ordered", [True, False])
def test_staged_counts_rows_at_tiny_batch_bounds(
    batch: int, ordered: bool, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sm_ingest, "_INDEX_BATCH", batch)
    walked: list[bool] = []
    real = sm_ingest.staged_plain

    def spy(data: bytes, store: LmdbStore) -> dict[str, Any] | None:
        found = real(data, store)
        walked.append(found is not None)
        return found

    monkeypatch.setattr(sm_tables, "staged_plain", spy)
    for seed in range(4):
        memory = _state(random.Random(seed), ordered)
        expected: dict[str, list[int]] = {}
        for i in memory.list_instances():
            expected.setdefault(i.workload_id, [0] * 5)[STATUSES.index(i.status)] += 1
        env = StateEnv(str(tmp_path / f"{seed}" / "state.lmdb"))
        staged = env.replace(env.stage(capture(memory)()))
        store = env.store
        with store.env.begin() as txn:
            rows = {
                bytes(k).decode(): list(COUNTS_ROW.unpack(bytes(v)))
                for k, v in txn.cursor(store.db("workload_counts"))
            }
        assert walked.pop() is True  # the one walk staged it, not the full reader
        assert rows == expected, (seed, batch, ordered)
        assert staged.problems() == []
        env.close()
