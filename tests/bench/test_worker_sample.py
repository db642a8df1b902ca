"""The bench's linearizability sample run by a worker (the Go worker, ``--loadgen go``): its
history checked as the bench's own, a worker that answers none failing the run, and the
workers' errors and stalls reaching the figures (univrs/bench/measure.py, sample.py)."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
import trio

from tests.bench.test_bench import FakeClient
from univrs.bench import client as bench
from univrs.bench import sample as sample_module
from univrs.bench.latency import Histogram
from univrs.bench.sample import Sample
from univrs.bench.workers import load_ops
from univrs.client.client import Client


class SamplingPool:
    """A worker pool that runs the sample itself (as the Go worker does), answering with the
    history ``events`` builds from the spec it was sent (CLOCK_MONOTONIC times)."""

    runs_sample = True
    pids: dict[str, int] = {}

    def __init__(self, stale: bool) -> None:
        self.stale = stale
        self.specs: list[dict[str, Any]] = []

    async def run(
        self,
        phase: str,
        indices: list[int],
        start: float,
        duration: float,
        sample: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        assert sample is not None
        self.specs.append(sample)
        values = dict(sample["values"])
        process = sample["next_process"]
        now = time.monotonic()
        events: list[list[Any]] = []
        for key in values:
            before = values[key]
            for _ in range(3):  # a write of the next value, then a read of it
                values[key] += 1
                events.append([process, "invoke", "write", key, values[key], now])
                events.append([process, "ok", "write", key, values[key], now + 0.001])
                seen = before if self.stale else values[key]
                events.append([process + 1, "invoke", "read", key, None, now + 0.002])
                events.append([process + 1, "ok", "read", key, seen, now + 0.003])
                now += 0.004
            process += 2
        hist = Histogram()
        hist.record(0.001)
        answer = {"events": events, "values": values, "next_process": process}
        return [
            {"hist": hist.to_json(), "errors": [], "error_count": 0, "stalled": False}
            | {"sample": answer}
        ]


async def _measure_in_worker(stale: bool) -> tuple[dict[str, Any], SamplingPool, FakeClient]:
    keys = ["bench-0", "bench-1"]
    sample = Sample(keys, dict.fromkeys(keys, 0))
    pool, fake = SamplingPool(stale), FakeClient()
    result = await bench.measure(
        [cast(Client, fake)], 4, 0.05, load_ops(keys)["writes"], None, sample, pool=pool
    )
    return result, pool, fake


async def test_a_worker_that_runs_the_sample_has_its_history_checked() -> None:
    """``--loadgen go``: the Go worker runs the sampled writers and readers; the bench sends
    it the sampled clients and their last values, and checks the history it answers with
    (not its own readers': none run here)."""
    result, pool, fake = await _measure_in_worker(stale=False)
    assert result["check"]["verdict"] == "linearizable", result["check"]
    spec = pool.specs[0]
    assert spec["clients"] == [0, 1] and set(spec["values"]) == {"bench-0", "bench-1"}
    # The bench's own first write per key happened here; the rest came from the worker.
    assert spec["values"] == {"bench-0": 1, "bench-1": 1}
    assert result["check"]["ops"] == 2 + 2 * 6
    assert fake.answers == ["minimal", "minimal"]  # the two first writes, nothing more


async def test_a_worker_that_answers_no_history_fails_the_run() -> None:
    """The sample was handed to the worker: an answer without its history must not pass as a
    check of the bench's own first writes alone."""

    class Forgetful(SamplingPool):
        async def run(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            answers = await super().run(*args, **kwargs)
            return [{k: v for k, v in a.items() if k != "sample"} for a in answers]

    keys = ["bench-0", "bench-1"]
    sample = Sample(keys, dict.fromkeys(keys, 0))
    with pytest.raises(RuntimeError, match="0 sample histories"):
        await bench.measure(
            [cast(Client, FakeClient())],
            4,
            0.05,
            load_ops(keys)["writes"],
            None,
            sample,
            pool=Forgetful(stale=False),
        )


async def test_the_workers_errors_and_stalls_reach_the_figures() -> None:
    """Each worker's error count, first errors and stall flag are summed into the run's."""

    class Failing:
        runs_sample = False
        pids: dict[str, int] = {}

        async def run(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            hist = Histogram()
            hist.record(0.002)
            return [
                {"hist": hist.to_json(), "errors": ["unavailable: x"], "error_count": 3},
                {"hist": hist.to_json(), "errors": [], "error_count": 0},
            ]

    async def nothing(client: Client, i: int) -> None:
        await trio.sleep(0)

    pool = Failing()
    answers = await pool.run()
    answers[1]["stalled"] = True
    answers[0]["stalled"] = False

    async def run(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return answers

    pool.run = run  # type: ignore[method-assign]
    result = await bench.measure([cast(Client, FakeClient())], 4, 0.05, nothing, pool=pool)
    assert result["ops"] == 2
    assert result["errors"] == 3 + 1  # and one for the stall
    assert result["first_error"] == "stalled: abandoned"


async def test_a_stale_read_in_a_workers_history_fails_the_sample() -> None:
    result, _, _ = await _measure_in_worker(stale=True)
    assert result["check"]["verdict"] == "not-linearizable"


def test_a_workers_history_must_name_sampled_keys_and_go_forward() -> None:
    sample = Sample(["bench-0"], {"bench-0": 5})
    with pytest.raises(ValueError, match="unsampled key"):
        sample.take_worker_history(
            {
                "events": [[1, "invoke", "read", "bench-9", None, 0.0]],
                "values": {},
                "next_process": 2,
            },
            0.0,
        )
    with pytest.raises(ValueError, match="went back"):
        sample.take_worker_history({"events": [], "values": {"bench-0": 4}, "next_process": 2}, 0.0)


async def test_the_samples_values_never_coincide_with_the_loads() -> None:
    """A stale read of a value the load wrote (or the creation's) must not pass for a sampled
    write's: the sample's values start above all of them."""
    fake = FakeClient()
    write = load_ops(["bench-0"])["writes"]
    for _ in range(25):
        await write(cast(Client, fake), 0)
    seen = set(fake.values.values()) | set(fake.previous.values())
    assert max(seen) < sample_module.SAMPLE_FIRST_VALUE
    assert sample_module.SAMPLE_FIRST_VALUE > 1  # workloads are created with 1 replica
