"""The linearizable read path of the API (univrs/api/store.py ``read_at``, univrs/api/coalescer.py
``ReadCoalescer``, ``ApiService.execute_many``'s reads and their rendered-once results): a read
is never served from a state that a newer leader has moved past, and a result rendered for one
revision of the state is never served for another.

On real ``RaftRuntime`` drivers over the in-memory cluster (autojump clock), as
tests/api/test_state_store.py. ``test_a_cut_off_leader_serves_no_stale_read`` fails on a store
that skips the ReadIndex confirmation (the mutant below): the old leader then answers from its
own state, which a new leader has moved past.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cbor2
import pytest
import trio
from prometheus_client import generate_latest

from tests.api.test_write_outcomes import IDS, api_cluster
from tests.runtime.memcluster import wait_leader, wait_until
from univrs.api.rendered import RenderCache, Rendered
from univrs.api.service import ApiService, Job
from univrs.api.store import RaftStateStore
from univrs.client import protocol
from univrs.errors import Unavailable
from univrs.metrics import Registry
from univrs.sm.state import ClusterStateMachine

SPEC = {"name": "web", "image": "nginx:1", "replicas": 1}


async def _frame(service: ApiService, jobs: list[Job]) -> list[Job]:
    """Run ``jobs`` as one client frame; every job answered."""
    answered: list[Job] = []

    def got(done: Sequence[Job]) -> None:
        answered.extend(done)

    await service.execute_many(jobs, got)
    assert sorted(map(id, answered)) == sorted(map(id, jobs))
    return jobs


def _reads(n: int, consistency: str = "linearizable", timeout: float = 5.0) -> list[Job]:
    return [
        Job(name="workload.get", args={"id": "w"}, consistency=consistency, timeout=timeout)
        for _ in range(n)
    ]


async def test_a_cut_off_leader_serves_no_stale_read(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    cluster, services = await api_cluster(nursery)
    old = await wait_leader(cluster)
    api = services[old.node_id]
    await api.execute("workload.create", {"id": "w", "spec": SPEC})
    # The old leader's reads render (and cache) replicas 1 before it is cut off.
    first = await _frame(api, _reads(3))
    assert [job.result["spec"]["replicas"] for job in first] == [1, 1, 1]
    cluster.cut.add(old.node_id)
    others = [i for i in IDS if i != old.node_id]
    new = await wait_leader(cluster, others)
    await services[new.node_id].execute("workload.scale", {"id": "w", "replicas": 5})
    # The old node still has replicas 1 applied; a linearizable read there must not say so.
    assert old.sm.get_workload("w").spec.replicas == 1  # type: ignore[union-attr]
    jobs = await _frame(api, [*_reads(4), *_reads(1, timeout=2.0)])
    for job in jobs:
        assert job.error is not None, f"stale read served: {job.result}"
        assert isinstance(job.error, Unavailable), job.error
    with pytest.raises(Unavailable):
        await api.execute("workload.get", {"id": "w"}, timeout=2.0)
    # A local read may be stale, and says so; the new leader's reads are fresh.
    (local,) = await _frame(api, _reads(1, "local"))
    assert local.result["spec"]["replicas"] == 1 and local.meta is not None
    fresh = await _frame(services[new.node_id], _reads(2))
    assert [job.result["spec"]["replicas"] for job in fresh] == [5, 5]
    # Healed: the old node catches up and its reads show the new state, not its cached one.
    cluster.cut.clear()
    await wait_until(
        lambda: old.sm.get_workload("w").spec.replicas == 5,  # type: ignore[union-attr]
        "the old leader to catch up",
    )
    healed = await _frame(api, _reads(2))
    assert [job.result["spec"]["replicas"] for job in healed] == [5, 5]


async def test_a_store_that_skips_the_confirmation_is_caught(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mutant: ``read_at`` answers linearizable reads from this node's state at once (no
    ReadIndex confirmation). The stale-read test's scenario must then see a stale read."""

    async def unconfirmed(
        self: RaftStateStore, consistency: str, deadline: float
    ) -> ClusterStateMachine:
        return self.node.runtime.sm

    monkeypatch.setattr(RaftStateStore, "read_at", unconfirmed)
    with pytest.raises(AssertionError, match="stale read served"):
        await test_a_cut_off_leader_serves_no_stale_read(nursery, autojump_clock)


async def test_reads_in_one_frame_share_their_rendered_result(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Reads of one object at one revision are rendered once (one document, shared); a write
    in between renders it anew."""
    cluster, services = await api_cluster(nursery)
    leader = await wait_leader(cluster)
    api = services[leader.node_id]
    await api.execute("workload.create", {"id": "w", "spec": SPEC})
    jobs = await _frame(api, _reads(4))
    assert all(job.error is None for job in jobs)
    assert len({id(job.result) for job in jobs}) == 1
    again = await _frame(api, _reads(2))
    assert again[0].result is jobs[0].result  # no write since: the same rendering
    await api.execute("workload.scale", {"id": "w", "replicas": 3})
    after = await _frame(api, _reads(2))
    assert after[0].result is not jobs[0].result
    assert [job.result["spec"]["replicas"] for job in after] == [3, 3]
    # Another object, or a missing one, is its own answer.
    await api.execute("workload.create", {"id": "v", "spec": {**SPEC, "replicas": 2}})
    mixed = [
        Job(name="workload.get", args={"id": "v"}, consistency="linearizable"),
        Job(name="workload.get", args={"id": "w"}, consistency="linearizable"),
        Job(name="workload.get", args={"id": "nope"}, consistency="linearizable"),
    ]
    await _frame(api, mixed)
    assert mixed[0].result["spec"]["replicas"] == 2
    assert mixed[1].result["spec"]["replicas"] == 3
    assert mixed[2].error is not None and mixed[2].error.code == "not-found"  # type: ignore[attr-defined]


def test_a_frame_with_encoded_results_is_the_frame_with_the_documents() -> None:
    """``protocol.Encoded`` puts the same bytes in the frame as the document itself; anything
    else that is not plain data is still refused."""
    doc = {"id": "w", "spec": {"replicas": 3, "args": ["-v"]}, "version": 7}
    shared = Rendered(doc)
    encoded = shared.encoded()
    assert encoded is not None and shared.encoded() is encoded  # encoded once
    plain = protocol.encode_responses("n1", [{"id": 1, "ok": doc}, {"id": 2, "ok": doc}])
    spliced = protocol.encode_responses("n1", [{"id": 1, "ok": encoded}, {"id": 2, "ok": encoded}])
    assert spliced == plain
    assert protocol.decode_responses(spliced) == (
        "n1",
        [{"id": 1, "ok": doc}, {"id": 2, "ok": doc}],
    )
    with pytest.raises(TypeError):
        protocol.encode_responses("n1", [{"id": 1, "ok": object()}])
    assert Rendered({"bad": {1, 2}}).encoded() is None  # not plain: sent as is, refused there


def test_the_cache_keeps_flat_arguments_of_object_reads_only() -> None:
    state = ClusterStateMachine()
    cache = RenderCache()
    calls: list[dict[str, object]] = []

    def read(args: dict[str, object], _: ClusterStateMachine) -> object:
        calls.append(args)
        return {"n": len(calls)}

    one = cache.render("workload.get", {"id": "w"}, state, read)
    assert one is not None and cache.render("workload.get", {"id": "w"}, state, read) is one
    assert cache.render("workload.get", {"id": "v"}, state, read) is not one
    assert cache.render("workload.list", {}, state, read) is None  # not a one-object read
    assert cache.render("workload.get", {"id": ["w"]}, state, read) is None  # not flat
    assert cache.render("workload.get", {1: "w"}, state, read) is None  # type: ignore[dict-item]
    assert cache.render("workload.get", {"id": "w"}, ClusterStateMachine(), read) is not one
    assert len(calls) == 3 and cache.hits == 1


def test_observe_many_is_count_observations() -> None:
    one, many = Registry(), Registry()
    h1 = one.histogram("univrs_test_seconds", "test")
    h2 = many.histogram("univrs_test_seconds", "test")
    for value, count in [(0.0004, 3), (0.02, 5), (7.5, 2), (1e6, 4)]:
        for _ in range(count):
            h1.observe(value)
        h2.observe_many(value, count)
    assert h1.count == h2.count == 14
    assert generate_latest(one.prom) == generate_latest(many.prom)  # buckets, sum and count


def test_a_hand_assembled_response_frame_is_the_frame_cbor2_writes() -> None:
    """``encode_responses`` assembles reads answered from a shared rendering by hand: the
    bytes must be cbor2's for the same frame, at every size of id and of the response list,
    mixed with responses it leaves to cbor2 (errors, meta, plain results)."""
    doc = {"id": "w", "spec": {"replicas": 3}, "version": 7}
    encoded = Rendered(doc).encoded()
    assert encoded is not None
    ids = [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
    others: list[dict[str, Any]] = [
        {"id": 5, "error": {"code": "not-found", "message": "no"}},
        {"id": 6, "ok": doc, "meta": {"index": 9}},
        {"id": 7, "ok": encoded, "meta": {"index": 9}},
        {"id": 8, "ok": None},
    ]
    for count in (0, 1, 23, 24, 255, 256, 300):
        for leader in ("n1", None):
            responses: list[dict[str, Any]] = [
                {"id": ids[i % len(ids)], "ok": encoded} for i in range(count)
            ]
            responses += others[: count % 5]
            expected = cbor2.dumps(
                {
                    "leader": leader,
                    "r": [{k: doc if v is encoded else v for k, v in r.items()} for r in responses],
                }
            )
            assert protocol.encode_responses(leader, responses) == expected, (count, leader)
    # Runs of responses left to cbor2 (encoded in one call each) between reads it skips, of
    # every size of list head.
    for run in (1, 23, 24, 255, 256):
        plain = [others[i % 4] for i in range(run)]
        responses = [{"id": 1, "ok": encoded}, *plain, {"id": 2, "ok": encoded}, *plain]
        expected = cbor2.dumps(
            {
                "leader": "n1",
                "r": [{k: doc if v is encoded else v for k, v in r.items()} for r in responses],
            }
        )
        assert protocol.encode_responses("n1", responses) == expected, run
