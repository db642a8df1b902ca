"""``mypyc_attr``, the marker mypyc reads on the core's layer classes, without a runtime
dependency on mypy_extensions (docs/performance.md, "Round 20 (s20-mypyc)").

``scripts/compile`` builds the layers (base.py ... node.py) as mypyc native classes: attributes
in a C struct, methods called through a vtable. ``allow_interpreted_subclasses`` keeps them open
to subclasses written in Python (the simulator's mutants, tests' doubles), whose overrides the
compiled layers then call. mypyc knows the marker by its name in mypy_extensions, which only
the type checker imports; at run time it is a no-op, so the interpreted core (the default) is
the same classes as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

T = TypeVar("T")

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr as mypyc_attr
else:

    def mypyc_attr(*flags: str, **values: object) -> Callable[[T], T]:
        """A no-op when interpreted (mypyc consumes the real one at compile time)."""
        return lambda cls: cls
