"""Why the event loop was late: the evidence the ticker (ticks.py) logs with a late tick.

A tick that fires more than ``LATE_SECONDS`` after its time means the node's event loop did
not get back to its timers for that long. Three causes look the same from inside the loop and
are told apart here, over the interval since the previous tick (docs/performance.md, "Round
10: event-loop stalls under load"):

* **one long task step on the loop**: the loop's thread was on a CPU (``cpu_ms`` close to the
  wall time) and, with the step timer on, one task step took most of it (``step_ms``,
  ``step_task``);
* **the interpreter lock held by another thread** (a worker thread's Python or C code that does
  not release it): the loop's thread was neither on a CPU nor waiting for one, while the
  process's other threads used CPU (``threads_cpu_ms``);
* **the process descheduled** (the machine is busy): the loop's thread was runnable and waiting
  for a CPU (``runq_ms``, from Linux's ``/proc/thread-self/schedstat``).

``LoopClock`` reads the loop thread's CPU time, its run-queue wait, the process's CPU time and
``GC_PAUSES`` (every cyclic collection's wall time, also exported as the node's ``univrs_gc_*``
metrics by univrs/server/heap.py): cheap reads, once per tick. ``StepTimer`` (a trio
instrument, on when ``UNIVRS_LOOP_STEPS`` is set in the environment: it costs three clock reads
per task step) adds the longest task step of the interval, its CPU time, its task's name and
the time the loop slept waiting for I/O.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

__all__ = ["GC_PAUSES", "GcPauses", "LoopClock", "LoopSample", "StepTimer", "step_timer_wanted"]

STEPS_ENV = "UNIVRS_LOOP_STEPS"


@attrs.define(eq=False)
class GcPauses:
    """Collections and their pauses in this process, by generation (0, 1, 2)."""

    collections: list[int] = attrs.field(factory=lambda: [0, 0, 0])
    seconds: list[float] = attrs.field(factory=lambda: [0.0, 0.0, 0.0])
    longest: float = 0.0
    _started: float = attrs.field(default=0.0, init=False)
    _installed: bool = attrs.field(default=False, init=False)

    def install(self) -> None:
        """Start measuring (once per process; later calls do nothing)."""
        if not self._installed:
            self._installed = True
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Stop measuring."""
        if self._installed:
            self._installed = False
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = min(int(info.get("generation", 2)), 2)
        self.collections[generation] += 1
        self.seconds[generation] += pause
        self.longest = max(self.longest, pause)

    def total(self) -> float:
        """Seconds spent in collections so far (every generation)."""
        return sum(self.seconds)


GC_PAUSES = GcPauses()


def step_timer_wanted() -> bool:
    """Whether the environment asks for the step timer (``UNIVRS_LOOP_STEPS`` set, not 0)."""
    return os.environ.get(STEPS_ENV, "0") not in ("", "0")


class StepTimer(trio.abc.Instrument):
    """The longest task step, the total of task steps and the I/O wait since the last ``take``."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started: float | None = None
        self._cpu_started = 0.0
        self._io_started = 0.0
        self.longest = 0.0
        self.longest_cpu = 0.0
        self.longest_task = ""
        self.busy = 0.0
        self.io_wait = 0.0
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._cpu_started = time.thread_time()
        self._started = self._clock()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self._started is None:  # installed during this step
            return
        took = self._clock() - self._started
        self.busy += took
        self.steps += 1
        if took > self.longest:
            self.longest = took
            self.longest_cpu = time.thread_time() - self._cpu_started
            self.longest_task = task.name

    def before_io_wait(self, timeout: float) -> None:
        self._io_started = self._clock()

    def after_io_wait(self, timeout: float) -> None:
        self.io_wait += self._clock() - self._io_started

    def take(self) -> dict[str, Any]:
        """The figures since the last call (milliseconds), then start over."""
        out = {
            "step_ms": round(self.longest * 1000, 1),
            "step_cpu_ms": round(self.longest_cpu * 1000, 1),
            "step_task": self.longest_task,
            "steps_ms": round(self.busy * 1000, 1),
            "steps": self.steps,
            "io_wait_ms": round(self.io_wait * 1000, 1),
        }
        self.longest, self.longest_task, self.busy, self.io_wait, self.steps = 0.0, "", 0.0, 0.0, 0
        return out


@attrs.frozen
class LoopSample:
    """The clocks at one moment (seconds)."""

    wall: float
    cpu: float  # the loop thread's CPU time
    runq: float | None  # the loop thread's time runnable but not running (None: not Linux)
    process_cpu: float  # every thread's CPU time
    gc: float  # time in the cyclic garbage collector (GC_PAUSES, when installed)


def _runq_seconds(path: str) -> float | None:
    try:
        with open(path, "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


@attrs.define(eq=False)
class LoopClock:
    """Samples of the loop thread's clocks; ``since`` gives the evidence for one interval.
    Made on the loop's thread (it reads that thread's clocks)."""

    _schedstat: str = attrs.field(
        factory=lambda: f"/proc/self/task/{threading.get_native_id()}/schedstat"
    )

    def sample(self) -> LoopSample:
        return LoopSample(
            wall=time.perf_counter(),
            cpu=time.thread_time(),
            runq=_runq_seconds(self._schedstat),
            process_cpu=time.process_time(),
            gc=GC_PAUSES.total(),
        )

    @staticmethod
    def since(before: LoopSample, after: LoopSample) -> dict[str, Any]:
        """The interval's figures in milliseconds: wall, the loop thread's CPU, its run-queue
        wait, the other threads' CPU."""
        cpu = after.cpu - before.cpu
        out: dict[str, Any] = {
            "interval_ms": round((after.wall - before.wall) * 1000),
            "cpu_ms": round(cpu * 1000),
            "threads_cpu_ms": round((after.process_cpu - before.process_cpu - cpu) * 1000),
            "gc_ms": round((after.gc - before.gc) * 1000),
        }
        if after.runq is not None and before.runq is not None:
            out["runq_ms"] = round((after.runq - before.runq) * 1000)
        return out
