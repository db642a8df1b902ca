"""The workload's mapping of register operations onto the client API, with a fake client."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from univrs.chaos.history import EventType, Fn, pair
from univrs.chaos.linearizability import Verdict, check_history
from univrs.chaos.scenario import WorkloadSpec
from univrs.chaos.workload import VALUE_LABEL, Recorder, Workload, perform, value_of
from univrs.client import AlreadyExists, NotFound, Timeout, VersionConflict


class FakeClient:
    """Workload objects in a dict, with versions; ``fail_next`` raises on the next call."""

    def __init__(self, store: dict[str, dict[str, Any]]) -> None:
        self.store = store
        self.version = 0
        self.fail_next: Exception | None = None
        self.calls: list[str] = []

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    def _bump(self) -> int:
        self.version = max([self.version, *(d["version"] for d in self.store.values())]) + 1
        return self.version

    async def get_workload(self, id: str, *, consistency: str | None = None) -> Any:
        self._maybe_fail("get")
        await trio.sleep(0.001)
        if id not in self.store:
            raise NotFound(f"no workload {id}")
        return self.store[id]

    async def create_workload(self, spec: dict[str, Any], *, id: str | None = None) -> Any:
        self._maybe_fail("create")
        assert id is not None
        if id in self.store:
            raise AlreadyExists(id)
        self.store[id] = {"id": id, "version": self._bump(), "spec": spec}
        return self.store[id]

    async def update_workload(
        self, id: str, spec: dict[str, Any], *, expected_version: int | None = None
    ) -> Any:
        self._maybe_fail("update")
        if id not in self.store:
            raise NotFound(id)
        if expected_version is not None and self.store[id]["version"] != expected_version:
            raise VersionConflict("conflict")
        self.store[id] = {"id": id, "version": self._bump(), "spec": spec}
        return self.store[id]

    async def delete_workload(self, id: str, *, expected_version: int | None = None) -> Any:
        self._maybe_fail("delete")
        if id not in self.store:
            raise NotFound(id)
        del self.store[id]
        return {"id": id}


async def test_operations_map_onto_the_api() -> None:
    store: dict[str, dict[str, Any]] = {}
    c = FakeClient(store)
    client: Any = c
    assert (await perform(client, Fn.READ, "k", None)).value is None
    assert (await perform(client, Fn.WRITE, "k", "v1")).type is EventType.OK
    assert c.calls == ["get", "update", "create"]  # absent: update fails, create wins
    assert value_of(store["k"]) == "v1"
    assert (await perform(client, Fn.WRITE, "k", "v2")).type is EventType.OK
    read = await perform(client, Fn.READ, "k", None)
    assert (read.type, read.value) == (EventType.OK, "v2")
    miss = await perform(client, Fn.CAS, "k", ["v1", "v3"])
    assert (miss.type, miss.mismatch) == (EventType.FAIL, True)
    assert (await perform(client, Fn.CAS, "k", ["v2", "v3"])).type is EventType.OK
    assert value_of(store["k"]) == "v3"
    assert (await perform(client, Fn.CAS, "k", [None, "v4"])).mismatch  # exists already
    assert (await perform(client, Fn.DELETE, "k", None)).type is EventType.OK
    assert (await perform(client, Fn.DELETE, "k", None)).type is EventType.OK  # absent: fine
    assert (await perform(client, Fn.CAS, "k", [None, "v5"])).type is EventType.OK
    assert store["k"]["spec"]["labels"] == {VALUE_LABEL: "v5"}


async def test_version_conflict_is_a_mismatch_and_timeouts_are_info() -> None:
    c = FakeClient({})
    client: Any = c
    await perform(client, Fn.WRITE, "k", "a")
    c.fail_next = None

    original = c.update_workload

    async def racing_update(id: str, spec: dict[str, Any], **kw: Any) -> Any:
        c.store[id] = {**c.store[id], "version": c.store[id]["version"] + 100}
        return await original(id, spec, **kw)

    c.update_workload = racing_update  # type: ignore[method-assign]
    out = await perform(client, Fn.CAS, "k", ["a", "b"])
    assert (out.type, out.mismatch) == (EventType.FAIL, True)
    c.update_workload = original  # type: ignore[method-assign]
    c.fail_next = Timeout("no answer")
    out = await perform(client, Fn.WRITE, "k", "c")
    assert out.type is EventType.INFO and "Timeout" in out.error


def test_recorder_writes_one_json_line_per_event() -> None:
    buf = io.StringIO()
    rec = Recorder(t0=0.0, out=buf)

    async def main() -> None:
        rec.record(3, EventType.INVOKE, Fn.CAS, "k", ["a", "b"])
        rec.record(3, EventType.FAIL, Fn.CAS, "k", ["a", "b"], mismatch=True)

    trio.run(main)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [d["type"] for d in lines] == ["invoke", "fail"]
    assert lines[1]["mismatch"] is True
    assert set(lines[0]) == {"process", "type", "f", "key", "value", "time"}


async def test_workload_run_records_a_linearizable_history(autojump_clock: Any) -> None:
    store: dict[str, dict[str, Any]] = {}
    clients: list[FakeClient] = []

    @asynccontextmanager
    async def factory(endpoints: list[str], **kw: Any) -> AsyncIterator[FakeClient]:
        c = FakeClient(store)
        clients.append(c)
        yield c

    spec = WorkloadSpec(clients=3, keys=2, rate=30.0, timeout=1.0)
    w = Workload(
        spec=spec,
        endpoints=["x"],
        recorder=Recorder(t0=trio.current_time()),
        seed=1,
        client_factory=factory,
    )
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.run, stop)
        await trio.sleep(3.0)
        clients[0].fail_next = Timeout("lost")  # one unknown outcome
        await trio.sleep(3.0)
        stop.set()
    ops = pair(w.recorder.events)
    assert 100 < len(ops) < 300  # about rate x time
    assert {op.f for op in ops} == {Fn.READ, Fn.WRITE, Fn.CAS, Fn.DELETE}
    assert any(op.status is EventType.OK and op.f is Fn.CAS for op in ops)
    infos = [op for op in ops if op.status is EventType.INFO]
    assert len(infos) == 1
    # after an info the client goes on as a new process
    assert not [op for op in ops if op.process == infos[0].process and op.call > infos[0].call]
    assert len({op.process for op in ops}) == 4
    values = [op.input for op in ops if op.f is Fn.WRITE]
    assert len(values) == len(set(values))  # unique values
    assert check_history(ops).verdict is Verdict.OK
    assert w.errors == {"Timeout": 1}


async def test_pinned_clients_each_stay_on_one_node(autojump_clock: Any) -> None:
    """``pin = true``: client i is given node i (mod n) alone and told to stay there, so every
    node serves clients (followers forward writes and reads; a paused node holds its own
    clients' requests)."""
    store: dict[str, dict[str, Any]] = {}
    opened: list[tuple[list[str], dict[str, Any]]] = []

    @asynccontextmanager
    async def factory(endpoints: list[str], **kw: Any) -> AsyncIterator[FakeClient]:
        opened.append((endpoints, kw))
        yield FakeClient(store)

    spec = WorkloadSpec(clients=4, keys=1, rate=10.0, timeout=1.0, pin=True)
    w = Workload(
        spec=spec,
        endpoints=["a", "b", "c"],
        recorder=Recorder(t0=trio.current_time()),
        seed=1,
        client_factory=factory,
    )
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.run, stop)
        await trio.sleep(1.0)
        stop.set()
    assert sorted(e for e, _ in opened) == [["a"], ["a"], ["b"], ["c"]]
    assert all(kw.get("stay") is True for _, kw in opened)
