"""``slot_builder`` (univrs/sm/builders.py, round 17): the objects it builds are those the
class's own ``__init__`` builds (equal, hashed alike, the same repr), and it refuses a class
whose ``__init__`` does more than set the fields."""

from __future__ import annotations

import attrs
import pytest

from univrs.sm.builders import slot_builder
from univrs.sm.commands import Envelope, ScaleWorkload, TransferCredits
from univrs.sm.model import WorkloadSpec
from univrs.sm.objects import StoredWorkload


def test_built_objects_are_the_constructors() -> None:
    spec = WorkloadSpec(name="web", image="nginx:1", replicas=3, labels={"a": "b"})
    cases = [
        (StoredWorkload, ("w", spec, 7, 2)),
        (ScaleWorkload, ("w", 4, None)),
        (TransferCredits, ("p0", "p1", 5)),
        (Envelope, (ScaleWorkload(id="w", replicas=1), "c", 3, "token:a")),
    ]
    for cls, values in cases:
        names = [a.name for a in attrs.fields(cls)]
        made = cls(**dict(zip(names, values, strict=True)))
        built = slot_builder(cls)(*values)
        assert type(built) is cls
        assert built == made and hash(built) == hash(made) and repr(built) == repr(made)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            built.__setattr__(names[0], values[0])  # still frozen


def test_a_class_whose_init_does_more_is_refused() -> None:
    with pytest.raises(TypeError, match="converter"):
        slot_builder(WorkloadSpec)  # its fields have converters

    @attrs.frozen
    class Checked:
        x: int = attrs.field(validator=attrs.validators.instance_of(int))

    with pytest.raises(TypeError, match="validator"):
        slot_builder(Checked)

    @attrs.frozen
    class Later:
        x: int

        def __attrs_post_init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="post-init"):
        slot_builder(Later)

    @attrs.frozen(slots=False)
    class NoSlots:
        x: int

    with pytest.raises(TypeError, match="slots"):
        slot_builder(NoSlots)
