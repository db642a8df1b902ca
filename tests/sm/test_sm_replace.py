"""The scale's copy of a workload (univrs/sm/model.py ``with_replicas``, handlers.py
``_scale_workload``) equals what ``attrs.evolve`` builds: every field, its type, its hash."""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st

from tests.sm.strategies import specs
from univrs.sm.model import WorkloadSpec, with_replicas
from univrs.sm.objects import StoredWorkload


@given(spec=specs, replicas=st.integers(-5, 10_000))
def test_with_replicas_is_evolve(spec: WorkloadSpec, replicas: int) -> None:
    before = spec.replicas
    fast, slow = with_replicas(spec, replicas), attrs.evolve(spec, replicas=replicas)
    assert fast == slow and hash(fast) == hash(slow)
    for field in attrs.fields(WorkloadSpec):
        a, b = getattr(fast, field.name), getattr(slow, field.name)
        assert a == b and type(a) is type(b)
    assert spec.replicas == before  # the original is untouched
    assert with_replicas(spec, spec.replicas) == spec


def test_the_scale_rebuilds_every_field_of_a_stored_workload() -> None:
    # _scale_workload builds StoredWorkload by its constructor with these fields: a field added
    # to it must be carried over there too (this fails until it is).
    names = [f.name for f in attrs.fields(StoredWorkload)]
    assert names == ["id", "spec", "version", "created_index"]
