"""``mypyc_attr``, the marker the core's layer classes (base.py ... node.py) carry, without a
run-time dependency on mypy_extensions (docs/performance.md, "Round 20 (s20-mypyc)").

Interpreted (the default: tests, CI, ``univrs node start``) the marker is
``attrs.define(eq=False, init=False, repr=False)``, so the layers are the slotted attrs classes
they always were. Compiled (``scripts/compile``, ``UNIVRS_COMPILED=1``) mypyc knows the marker
by its name in mypy_extensions, which only the type checker imports, and never calls it: the
layers become mypyc native classes (attributes in a C struct, methods through a vtable), which
an ``attrs`` decorator would prevent (mypyc compiles a class with any other decorator as a
plain Python class, and gains nothing). ``allow_interpreted_subclasses`` keeps them open to
subclasses written in Python (the simulator's mutants, tests' doubles), whose overrides the
compiled layers then call.

This module itself is never compiled (scripts/compile.py): mypyc takes ``TYPE_CHECKING`` as
true and would compile the run-time branch as unreachable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import attrs

T = TypeVar("T")

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr as mypyc_attr
else:

    def mypyc_attr(**values: object) -> Callable[[T], T]:
        """Interpreted: the layers' attrs class (see the module docstring)."""
        if values != {"allow_interpreted_subclasses": True}:
            raise TypeError(f"mypyc_attr: only the core's layers use it, not {values}")
        return attrs.define(eq=False, init=False, repr=False)
