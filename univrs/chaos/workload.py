"""The workload: concurrent clients doing register operations on workload objects, recorded.

Each register is a workload object (id ``chaos-k<i>``) whose value is the label
``chaos.value``; absent object = null. Values are unique (``"<process>-<n>"``), so every read
identifies the one write it observed. Each client is a ``univrs.client`` client of its own and
does one operation at a time; the operations map onto the API as:

* read: ``workload.get`` (linearizable); not-found reads null;
* write: ``workload.update``, or ``workload.create`` when the object is absent, or update again
  when a concurrent create won (each attempt that fails with not-found/already-exists certainly
  did not apply, so exactly one attempt takes effect);
* cas [old, new]: old null is a create (already-exists: the value differed); otherwise a
  linearizable get, and when the value is ``old`` an update with the object's version as
  expected version (If-Match). A differing value or a version conflict is ``fail`` with
  ``mismatch``;
* delete: ``workload.delete``; not-found is a successful delete of an absent register.

Outcomes. Answers of the state machine (not-found, already-exists, version-conflict) are
definite: with the client's idempotency keys a retried write gets its first answer, so they
mean the attempt did not apply. Anything else (timeout, connection lost, unavailable after the
client's retries, not-leader) is ``info``: the write may or may not have happened. After an
``info`` the client continues as a new process id, as in Jepsen, since its old process stays
open for ever in the history.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import IO, Any

import attrs
import trio

from univrs.chaos.history import Event, EventType, Fn, dumps
from univrs.chaos.scenario import WorkloadSpec
from univrs.client import AlreadyExists, Client, NotFound, UnivrsError, VersionConflict, open_client

log = logging.getLogger("univrs.chaos.workload")

VALUE_LABEL = "chaos.value"
IMAGE = "chaos/register:1"
WRITE_ATTEMPTS = 4  # update/create alternations before a write gives up (fail: none applied)


def key_names(count: int) -> list[str]:
    return [f"chaos-k{i}" for i in range(1, count + 1)]


@attrs.define(eq=False)
class Recorder:
    """Appends history events (to memory and, line by line, to a file)."""

    t0: float
    out: IO[str] | None = None
    events: list[Event] = attrs.field(factory=list)

    def now(self) -> float:
        return trio.current_time() - self.t0

    def record(
        self,
        process: int,
        type_: EventType,
        f: Fn,
        key: str,
        value: Any,
        *,
        mismatch: bool = False,
    ) -> Event:
        event = Event(
            process=process,
            type=type_,
            f=f,
            key=key,
            value=value,
            time=round(self.now(), 6),
            mismatch=mismatch,
        )
        self.events.append(event)
        if self.out is not None:
            self.out.write(dumps(event) + "\n")
        return event


@attrs.frozen(kw_only=True)
class Outcome:
    """How one operation ended: ``type`` ok/fail/info, ``value`` for an ok read."""

    type: EventType
    value: Any = None
    mismatch: bool = False
    error: str = ""


OK = Outcome(type=EventType.OK)


def _spec(key: str, value: str) -> dict[str, Any]:
    return {"name": key, "image": IMAGE, "replicas": 0, "labels": {VALUE_LABEL: value}}


def value_of(doc: Any) -> Any:
    """The register value of a workload document (null if the label is missing)."""
    labels = (doc.get("spec") or {}).get("labels") or {}
    return labels.get(VALUE_LABEL)


async def do_read(client: Client, key: str) -> Outcome:
    try:
        doc = await client.get_workload(key, consistency="linearizable")
    except NotFound:
        return Outcome(type=EventType.OK, value=None)
    return Outcome(type=EventType.OK, value=value_of(doc))


async def do_write(client: Client, key: str, value: str) -> Outcome:
    for _ in range(WRITE_ATTEMPTS):
        try:
            await client.update_workload(key, _spec(key, value))
            return OK
        except NotFound:
            pass
        try:
            await client.create_workload(_spec(key, value), id=key)
            return OK
        except AlreadyExists:
            pass
    return Outcome(type=EventType.FAIL, error="create and update kept racing")


async def do_cas(client: Client, key: str, old: str | None, new: str) -> Outcome:
    mismatch = Outcome(type=EventType.FAIL, mismatch=True)
    if old is None:
        try:
            await client.create_workload(_spec(key, new), id=key)
        except AlreadyExists:
            return mismatch
        return OK
    try:
        doc = await client.get_workload(key, consistency="linearizable")
    except NotFound:
        return mismatch
    if value_of(doc) != old:
        return mismatch
    try:
        await client.update_workload(key, _spec(key, new), expected_version=doc["version"])
    except (VersionConflict, NotFound):
        return mismatch
    return OK


async def do_delete(client: Client, key: str) -> Outcome:
    # Deleting an absent register (not-found) is fine: it is absent at that point.
    with contextlib.suppress(NotFound):
        await client.delete_workload(key)
    return OK


async def perform(client: Client, f: Fn, key: str, value: Any) -> Outcome:
    """Run one register operation; API errors that leave the outcome unknown become info."""
    try:
        if f is Fn.READ:
            return await do_read(client, key)
        if f is Fn.WRITE:
            return await do_write(client, key, value)
        if f is Fn.CAS:
            return await do_cas(client, key, value[0], value[1])
        return await do_delete(client, key)
    except UnivrsError as exc:
        return Outcome(type=EventType.INFO, error=f"{type(exc).__name__}: {exc}")


@attrs.define(eq=False)
class Workload:
    """The clients of one run (see the module docstring)."""

    spec: WorkloadSpec
    endpoints: list[str]
    recorder: Recorder
    seed: int
    keys: list[str] = attrs.field(factory=list)
    _next_process: int = 0
    errors: dict[str, int] = attrs.field(factory=dict)  # info/fail reasons, counted
    client_factory: Callable[..., Any] = open_client  # tests substitute a fake
    _last_seen: dict[str, Any] = attrs.field(factory=dict)  # key -> newest value seen

    def __attrs_post_init__(self) -> None:
        if not self.keys:
            self.keys = key_names(self.spec.keys)

    def new_process(self) -> int:
        self._next_process += 1
        return self._next_process - 1

    async def run(self, stop: trio.Event) -> None:
        """Run every client until ``stop`` is set (operations in flight then finish)."""
        async with trio.open_nursery() as nursery:
            for i in range(self.spec.clients):
                nursery.start_soon(self._client, i, stop)

    async def _client(self, index: int, stop: trio.Event) -> None:
        rng = random.Random(f"{self.seed}/client/{index}")
        ops = [Fn(name) for name, _w in self.spec.mix]
        weights = [w for _n, w in self.spec.mix]
        mean_gap = self.spec.clients / self.spec.rate
        counter = 0
        endpoints, pinned = self.endpoints, {}
        if self.spec.pin and self.endpoints:
            # Client i connects to node i (mod n) only and stays there (``stay``): it moves
            # (to a member its hello listed) only when that node's connection breaks.
            endpoints = [self.endpoints[index % len(self.endpoints)]]
            pinned = {"stay": True}
        async with self.client_factory(
            endpoints, timeout=self.spec.timeout, connect_timeout=1.0, **pinned
        ) as client:
            process = self.new_process()
            with trio.move_on_after(mean_gap * rng.random()):  # spread the clients' starts
                await stop.wait()
            while not stop.is_set():
                f = rng.choices(ops, weights)[0]
                key = rng.choice(self.keys)
                counter += 1
                value = self._invoke_value(f, rng, process, counter, key)
                outcome = await self.run_one(client, process, f, key, value)
                if outcome.type is EventType.INFO:
                    process = self.new_process()
                with trio.move_on_after(rng.expovariate(1.0 / mean_gap)):
                    await stop.wait()

    def _invoke_value(self, f: Fn, rng: random.Random, process: int, counter: int, key: str) -> Any:
        fresh = f"{process}-{counter}"
        if f is Fn.WRITE:
            return fresh
        if f is Fn.CAS:
            return [self._guess(rng, key), fresh]
        return None

    def _guess(self, rng: random.Random, key: str) -> Any:
        # cas needs a plausible old value to succeed sometimes: the key's last value seen by
        # any client (an ok read or write), else null.
        return self._last_seen.get(key) if rng.random() < 0.9 else None

    async def run_one(
        self,
        client: Client,
        process: int,
        f: Fn,
        key: str,
        value: Any,
        op: Callable[[Client, Fn, str, Any], Awaitable[Outcome]] = perform,
    ) -> Outcome:
        """One recorded operation: invoke, run (bounded by the op timeout), complete."""
        rec = self.recorder
        rec.record(process, EventType.INVOKE, f, key, value)
        outcome = Outcome(type=EventType.INFO, error="cancelled")
        try:
            # The client has its own deadline per call; this one bounds the whole operation
            # (a write may take several calls).
            with trio.move_on_after(self.spec.timeout * WRITE_ATTEMPTS + 1) as scope:
                outcome = await op(client, f, key, value)
            if scope.cancelled_caught:
                outcome = Outcome(type=EventType.INFO, error="no answer in time")
        finally:
            with trio.CancelScope(shield=True):
                done = value if f is not Fn.READ else outcome.value
                if outcome.type is not EventType.OK and f is Fn.READ:
                    done = None
                rec.record(process, outcome.type, f, key, done, mismatch=outcome.mismatch)
        if outcome.type is EventType.OK:
            if f is Fn.READ:
                self._last_seen[key] = outcome.value
            elif f is Fn.WRITE:
                self._last_seen[key] = value
            elif f is Fn.CAS:
                self._last_seen[key] = value[1]
            elif f is Fn.DELETE:
                self._last_seen[key] = None
        if outcome.error:
            reason = outcome.error.split(":", 1)[0]
            self.errors[reason] = self.errors.get(reason, 0) + 1
        return outcome
