"""The linearizability sample of a bench write measurement (``univrs.bench.client``).

In every write measurement with at least ``SAMPLE_MIN_CLIENTS`` clients, a sample of the
clients (at most ``SAMPLE_KEYS``) write unique values and, alongside, one paced reader per
sampled key reads it linearizably; those operations are recorded as a history
(``univrs.chaos.history``, at most ``SAMPLE_OPS`` per key) and checked with the chaos suite's
checker (``univrs.chaos.linearizability``, within ``CHECK_TIMEOUT``). The sampled readers'
operations are not counted in the figures. A sampled key's writer records its writes for as
long as the key's reader reads (``writing``): once the reader is done, no recorded read can
observe the writer's later, unrecorded writes (the load's own values, not unique).

With ``--loadgen go`` the Go worker runs the sampled writers and readers itself, beside the
load, and records the same history (``worker_spec`` says what to run; its answer comes back
through ``take_worker_history``): the sampled writes then travel in the load's own frames
instead of a connection of their own, as a load generator's do, and the check is the same
(a write whose every attempt was refused is ``fail``; one of which any attempt's outcome is
unknown is ``info``, a new process; a failed read is ``info``).
"""

from __future__ import annotations

from typing import Any

import trio

from univrs.chaos.history import Event, EventType, Fn
from univrs.chaos.linearizability import check_history
from univrs.client.client import Client
from univrs.errors import UnivrsError

SAMPLE_KEYS = 4  # keys whose operations are recorded and checked, per write measurement
SAMPLE_OPS = 1000  # recorded operations per sampled key at most
SAMPLE_FIRST_VALUE = 100  # sampled values start above this: the load writes 0-9 (workers.py)
SAMPLE_MIN_CLIENTS = 16  # below this many clients no sample (its reader would skew the load)
# Seconds between two reads of a sampled reader. Each read is a linearizable read on its own
# (a ReadIndex round of its own on the leader: about 0.6 ms of the leader's CPU, as a lone
# client's read); at 0.01 s the four readers made ~400 of them a second, a quarter of a core
# on the leader, and the 64-client write figures of session 20 lost a third to the sample
# (docs/performance.md, "scripts/bench --compare-etcd at the end of session 20"). At 0.05 s:
# at most ~80 a second, and still several writes of the key between two reads.
SAMPLE_READ_PAUSE = 0.05
CHECK_TIMEOUT = 20.0  # seconds for the checker per sample


class Sample:
    """The recorded history of the sampled keys in one write measurement."""

    def __init__(self, keys: list[str], values: dict[str, int], answer: str = "minimal") -> None:
        self.keys = keys
        # What the sampled writes ask for: the history needs only whether each applied (the
        # reads record the values), so "minimal" (its version) serves as well as "full".
        self.answer = answer
        self.events: list[Event] = []
        self.ops = dict.fromkeys(keys, 0)
        # The last value written per key, shared by the run's samples: values stay unique.
        self.values = values
        self.next_process = 0
        self.readers_done: set[str] = set()

    def process(self) -> int:
        self.next_process += 1
        return self.next_process

    def full(self, key: str) -> bool:
        return self.ops[key] >= SAMPLE_OPS

    def writing(self, key: str) -> bool:
        """Whether the key's writer still records unique values: until its reader is done."""
        return key not in self.readers_done

    def reader_done(self, key: str) -> None:
        """The key's reader read its last value: the key's later writes are not recorded."""
        self.readers_done.add(key)

    def record(self, process: int, type_: EventType, f: Fn, key: str, value: Any) -> None:
        if type_ is EventType.INVOKE:
            self.ops[key] += 1
        self.events.append(
            Event(
                process=process,
                type=type_,
                f=f,
                key=key,
                value=value,
                time=trio.current_time(),
            )
        )

    def worker_spec(self, indices: list[int]) -> dict[str, Any]:
        """What a worker that runs the sample itself (the Go worker, ``--loadgen go``) needs:
        the clients whose keys are sampled (the key of client ``i`` is ``bench-{i}``), the
        last value written per key, the next free process id, the readers' pace and the
        operations per key at most."""
        return {
            "clients": indices,
            "values": {key: self.values[key] for key in self.keys},
            "next_process": self.next_process + 1,
            "read_pause": SAMPLE_READ_PAUSE,
            "max_ops": SAMPLE_OPS,
        }

    def take_worker_history(self, answer: dict[str, Any], offset: float) -> None:
        """Add the history a worker recorded (``worker_spec``) to this sample: its events in
        the order it recorded them, their times (CLOCK_MONOTONIC seconds) moved onto this
        process's Trio clock by ``offset``, and the values it wrote. A malformed answer is a
        ``ValueError``: the run fails rather than check less than it says."""
        for process, type_, f, key, value, seconds in answer["events"]:
            if key not in self.ops:
                raise ValueError(f"the worker's sample names an unsampled key {key!r}")
            event_type = EventType(type_)
            if event_type is EventType.INVOKE:
                self.ops[key] += 1
            self.events.append(
                Event(
                    process=int(process),
                    type=event_type,
                    f=Fn(f),
                    key=key,
                    value=value,
                    time=float(seconds) + offset,
                )
            )
        for key, value in answer["values"].items():
            if key not in self.values or int(value) < self.values[key]:
                raise ValueError(f"the worker's sample went back on key {key!r}")
            self.values[key] = int(value)
        self.next_process = max(self.next_process, int(answer["next_process"]))
        self.readers_done.update(self.keys)

    def check(self) -> dict[str, Any]:
        result = check_history(self.events, timeout=CHECK_TIMEOUT)
        return {
            "verdict": result.verdict.value,
            "ops": sum(k.operations for k in result.keys),
            "keys": len(result.keys),
            "summary": result.summary(),
        }


async def recorded_write(sample: Sample, process: int, client: Client, key: str) -> int:
    """Write the key's next unique value, recorded; the process id to go on with."""
    sample.values[key] += 1
    value = sample.values[key]
    sample.record(process, EventType.INVOKE, Fn.WRITE, key, value)
    try:
        await client.scale_workload(key, value, answer=sample.answer)
    except UnivrsError as exc:
        # Definite refusals did not apply; anything else may have: unknown, new process id.
        if exc.outcome_unknown:
            sample.record(process, EventType.INFO, Fn.WRITE, key, value)
            return sample.process()
        sample.record(process, EventType.FAIL, Fn.WRITE, key, value)
        return process
    sample.record(process, EventType.OK, Fn.WRITE, key, value)
    return process


async def recorded_read(sample: Sample, process: int, client: Client, key: str) -> int:
    sample.record(process, EventType.INVOKE, Fn.READ, key, None)
    try:
        doc = await client.get_workload(key, consistency="linearizable")
    except UnivrsError:
        sample.record(process, EventType.INFO, Fn.READ, key, None)
        return sample.process()
    sample.record(process, EventType.OK, Fn.READ, key, doc["spec"]["replicas"])
    return process
