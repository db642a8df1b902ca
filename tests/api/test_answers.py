"""A workload write's answer encoded from shared parts (univrs/api/answers.py) and the response
frame's fast path for write answers (univrs/client/protocol.py ``encode_responses``): the very
bytes cbor2 gives the document, whatever was cached before."""

from __future__ import annotations

import attrs
import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sm.strategies import good_specs
from univrs.api import convert as cv
from univrs.api.answers import WorkloadAnswers
from univrs.bench.scale_state import workload_spec
from univrs.client import protocol
from univrs.client.protocol import Encoded
from univrs.sm import Port, PortProtocol, WorkloadSpec
from univrs.sm.model import with_replicas
from univrs.sm.objects import StoredWorkload
from univrs.sm.status import status_for

small = st.integers(0, 3)
big = st.integers(0, (1 << 64) - 1)


def _expected(stored: StoredWorkload, counts: tuple[int, ...]) -> bytes:
    status = status_for(stored.spec.replicas, counts)  # type: ignore[arg-type]
    return cbor2.dumps(cv.stored_workload_doc(stored, status))


def _encoded(answers: WorkloadAnswers, stored: StoredWorkload, counts: tuple[int, ...]) -> bytes:
    status = status_for(stored.spec.replicas, counts)  # type: ignore[arg-type]
    return answers.encode(stored, status).data


@settings(max_examples=300)
@given(
    good_specs,
    st.lists(st.tuples(st.integers(1, 65535), st.sampled_from(PortProtocol)), max_size=3),
    st.tuples(small, small, small, small, small),
    big,
    big,
    st.lists(st.integers(0, 1000), min_size=1, max_size=4),
)
def test_an_encoded_answer_is_the_documents_cbor(
    spec: WorkloadSpec,
    ports: list[tuple[int, PortProtocol]],
    counts: tuple[int, ...],
    version: int,
    created: int,
    scales: list[int],
) -> None:
    named = tuple(
        Port(container_port=n, protocol=p, name=f"p{k}") for k, (n, p) in enumerate(ports)
    )
    answers = WorkloadAnswers()
    for s in (spec, WorkloadSpec(name=spec.name, image=spec.image, ports=named)):
        stored = StoredWorkload(id="w-1", spec=s, version=version, created_index=created)
        assert _encoded(answers, stored, counts) == _expected(stored, counts)
        # Scales as the state machine makes them (the spec's other parts shared): every
        # answer the new replicas, version and status, from the kept parts.
        for n, replicas in enumerate(scales):
            stored = StoredWorkload(
                id="w-1",
                spec=with_replicas(stored.spec, replicas),
                version=(version + n + 1) % (1 << 64),
                created_index=created,
            )
            assert _encoded(answers, stored, counts) == _expected(stored, counts)


def test_scales_reuse_the_specs_parts_and_stay_exact() -> None:
    answers = WorkloadAnswers()
    stored = StoredWorkload(id="w", spec=workload_spec(3), version=5, created_index=2)
    for n in range(1, 40):  # replicas across the one-byte bound (24) and beyond
        stored = StoredWorkload(
            id="w", spec=with_replicas(stored.spec, n), version=5 + n, created_index=2
        )
        counts = (n % 2, n % 3, 0, 0, n % 5)
        assert _encoded(answers, stored, counts) == _expected(stored, counts)
    assert answers.misses == 1 and answers.hits == 38  # encoded once, then reused


def test_a_changed_part_is_encoded_again_even_when_equal_looking() -> None:
    """Parts are reused only while they are the same objects: a spec update (new labels,
    image, ports; an equal value built anew) is encoded again, never answered with the old
    parts (fails if the parts were kept by workload id alone)."""
    answers = WorkloadAnswers()
    spec = WorkloadSpec(name="web", image="nginx:1", labels={"tier": "web"})
    stored = StoredWorkload(id="w", spec=spec, version=1, created_index=1)
    counts = (0, 0, 0, 0, 0)
    assert _encoded(answers, stored, counts) == _expected(stored, counts)
    for changed in (
        attrs.evolve(spec, labels={"tier": "db"}),
        attrs.evolve(spec, image="nginx:2"),
        attrs.evolve(spec, ports=(Port(container_port=80, protocol=PortProtocol.TCP, name="h"),)),
        attrs.evolve(spec, env={"A": "1"}, args=("-v",)),
        attrs.evolve(spec, name="web2"),
    ):
        stored = StoredWorkload(id="w", spec=changed, version=2, created_index=1)
        assert _encoded(answers, stored, counts) == _expected(stored, counts)


def test_a_status_is_encoded_per_status_object() -> None:
    answers = WorkloadAnswers()
    stored = StoredWorkload(id="w", spec=workload_spec(1), version=1, created_index=1)
    for counts in [(0, 0, 0, 0, 0), (1, 1, 0, 0, 0), (0, 2, 1, 0, 1), (0, 0, 0, 0, 0)]:
        assert _encoded(answers, stored, counts) == _expected(stored, counts)


@pytest.mark.parametrize("rid", [0, 23, 24, 255, 256, 65535, 65536, 1 << 32, (1 << 64) - 1])
def test_a_write_answers_fast_path_is_cbor2s_frame(rid: int) -> None:
    doc = cv.stored_workload_doc(
        StoredWorkload(id="w", spec=workload_spec(1), version=9, created_index=1),
        status_for(1, (0, 0, 0, 0, 0)),
    )
    data = Encoded(cbor2.dumps(doc))
    responses = [
        {"id": rid, "ok": data, "meta": {"index": rid}},  # a write's answer: the fast path
        {"id": 1, "ok": data},  # a read's shared rendering
        {"id": 2, "ok": {"a": 1}, "meta": {"index": 3}},  # plain documents: cbor2
        {"id": 3, "ok": data, "meta": {"index": 3, "x": 1}},  # another meta: cbor2 (default)
        {"id": 4, "ok": data, "meta": {"stale": 3}},
        {"id": 5, "error": {"code": "not-found", "message": "m"}},
        {"id": 6, "ok": data, "meta": {"index": 7}},
    ]
    plain = [{k: (doc if v is data else v) for k, v in r.items()} for r in responses]
    frame = protocol.encode_responses("n1", responses)
    assert frame == cbor2.dumps({"leader": "n1", "r": plain})
    assert protocol.decode_responses(frame) == ("n1", plain)


def test_the_kept_parts_are_bounded_by_bytes() -> None:
    # s15-review2: bounded by count only (8192 specs), large specs (a spec may be megabytes:
    # 1024 env values of 4 KiB) were each kept, encoded and decoded, until the count filled.
    from univrs.api.answers import MAX_KEPT_BYTES, MAX_PART_BYTES

    answers = WorkloadAnswers()
    value = "v" * 4000
    for n in range(320):  # ~38 MB of parts in all
        env = tuple((f"K{k}", f"{value}{n}") for k in range(30))  # ~120 KB encoded
        spec = WorkloadSpec(name=f"w{n}", image="img", env=env)
        stored = StoredWorkload(id=f"w-{n}", spec=spec, version=1, created_index=1)
        assert _encoded(answers, stored, (0, 0, 0, 0, 0)) == _expected(stored, (0, 0, 0, 0, 0))
        assert answers.kept_bytes() <= MAX_KEPT_BYTES
    kept = sum(len(p.before_replicas) + len(p.after_replicas) for p in answers._specs.values())
    assert kept == answers.kept_bytes() <= MAX_KEPT_BYTES
    # A spec larger than MAX_PART_BYTES is answered right and never kept.
    huge = WorkloadSpec(
        name="huge",
        image="img",
        env=tuple((f"K{k}", value) for k in range(MAX_PART_BYTES // 4000 + 8)),
    )
    stored = StoredWorkload(id="huge", spec=huge, version=1, created_index=1)
    assert _encoded(answers, stored, (0, 0, 0, 0, 0)) == _expected(stored, (0, 0, 0, 0, 0))
    assert "huge" not in answers._specs
