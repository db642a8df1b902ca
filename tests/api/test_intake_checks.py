"""A leader's intake of a frame of writes (``ApiService.start_writes``, session 30): the
deadlines it sets and the keys it checks are those of the general form. Each test says which
change it catches."""

from __future__ import annotations

import pathlib
import random
from typing import Any

import pytest
import trio

from tests.api.helpers import WORKLOAD, open_cluster
from univrs.api.service import ApiService, Job
from univrs.api.store import MAX_TIMEOUT
from univrs.errors import InvalidArgument


def _scale(key: Any, timeout: float | None = None) -> Job:
    return Job(name="workload.scale", args={"id": "w", "replicas": 1}, key=key, timeout=timeout)


async def test_start_writes_sets_the_deadlines_and_checks_the_keys(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every job's deadline is ``start + max(min(timeout, MAX_TIMEOUT), 0.001)`` (the store's
    timeout when it has none), over random timeouts (s30-hd writes the two calls as
    conditional expressions); and a bad key is refused with ``check_key``'s error although
    ``FrameWrites._leader_batch`` no longer checks the keys of ``start_writes`` (s30-hd:
    ``WriteBuilder.build`` checked them). Fails if the deadlines differ, or if a key went
    unchecked."""
    async with open_cluster(tmp_path, 1) as cluster:
        node = cluster.leader()
        assert node is not None
        service = ApiService(node.store)
        await service.execute("workload.create", {"id": "w", "spec": WORKLOAD})
        opened, _ = await service.execute("session.open", {})
        client = opened["client_id"]
        rng = random.Random(30)
        answered: list[Job] = []
        seq = 0
        for _ in range(20):
            timeouts: list[float | None] = [None, 0.0, 0.0005, 0.001, MAX_TIMEOUT]
            timeouts += [MAX_TIMEOUT * 2, float(MAX_TIMEOUT), 1e-9, 1e9]
            timeouts += [rng.randrange(0, 120_000) / 1000 for _ in range(8)]
            jobs = []
            for t in timeouts:
                seq += 1
                jobs.append(_scale((client, seq), t))
            bad = [
                _scale((client, 0)),
                _scale((client, 1 << 70)),
                _scale(("not an id!", 5)),
                _scale((client, True)),
            ]
            jobs += bad
            start = trio.current_time()
            with monkeypatch.context() as patch:
                patch.setattr(trio, "current_time", lambda start=start: start)
                taken, wait = service.start_writes(jobs, answered.extend, lambda *a: None)
            assert taken
            store_timeout = node.store.timeout
            for job in jobs[: len(timeouts)]:
                limit = store_timeout if job.timeout is None else min(job.timeout, MAX_TIMEOUT)
                assert job.deadline == start + max(limit, 0.001)
            for job in bad:
                assert isinstance(job.error, InvalidArgument), job.error
                assert job in answered
            assert wait is not None  # the good writes proposed, not answered here
            assert all(j.error is None for j in jobs[: len(timeouts)])
