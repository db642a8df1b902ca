"""Builders of frozen value objects for the apply path, without attrs' frozen ``__init__``.

A frozen attrs class with slots sets each field in ``__init__`` through
``object.__setattr__`` (it refuses its own ``setattr``): about 0.6 µs for a four-field object.
The apply path builds a few per write on every node (a scale's ``StoredWorkload``, each
command's ``Envelope`` and command on the nodes that read them from plain data). A builder
made by ``slot_builder`` sets the slots with their own descriptors instead (as
``model.with_replicas`` does for a spec): the same object, equal and hashed alike, in about
half the time (round 17, s17-cpu).

Only for a class whose fields have no converter, validator or ``on_setattr`` and that has no
``__attrs_post_init__`` (checked when the builder is made, at import): its ``__init__`` then
does nothing but set them. The builder takes every field, positionally, in attrs' order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["slot_builder"]


def slot_builder(cls: type[Any]) -> Callable[..., Any]:
    """A function ``build(*values)`` returning ``cls(**dict(zip(fields, values)))`` (see the
    module docstring); ``TypeError`` for a class it cannot build so."""
    fields = attrs.fields(cls)
    if "__slots__" not in cls.__dict__ or hasattr(cls, "__attrs_post_init__"):
        raise TypeError(f"{cls.__name__}: not a slots class without post-init")
    for field in fields:
        if field.converter is not None or field.validator is not None:
            raise TypeError(f"{cls.__name__}.{field.name} has a converter or validator")
        if field.on_setattr not in (None, attrs.setters.NO_OP):
            raise TypeError(f"{cls.__name__}.{field.name} has an on_setattr hook")
        if not field.init:
            raise TypeError(f"{cls.__name__}.{field.name} is not set by __init__")
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls}
    args = ", ".join(f"a{i}" for i in range(len(fields)))
    lines = [f"def build({args}):", "    obj = new(cls)"]
    for i, field in enumerate(fields):
        scope[f"set{i}"] = cls.__dict__[field.name].__set__
        lines.append(f"    set{i}(obj, a{i})")
    lines.append("    return obj")
    exec("\n".join(lines), scope)  # the code is built here, from the class's fields
    build: Callable[..., Any] = scope["build"]
    return build
