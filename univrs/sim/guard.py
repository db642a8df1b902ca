"""A rule the core lacks (issue 10): a node knows its own incarnation.

The core does not know the incarnation of its own data dir, so a node counts itself a voter of
any configuration that lists its id. A node whose disk was wiped, re-added under its old id
with a new incarnation, catches up through old configurations that list its id (bound to the
*old* incarnation) as a voter: it may campaign there and count its own vote, an amnesiac vote.
In a configuration where it was the only voter that alone elects it, with a log that lacks
committed entries (the simulator found it: ``python -m univrs.sim --seeds 1 --seed 106
--nodes 3`` with ``Simulation(guard=False)``; checked by the checker's "could be elected").
The transport's incarnation checks cannot help: no message is needed to vote for oneself.

The fix proposed for the core (``RaftNode(..., incarnation=...)``): a node never campaigns in,
or counts itself a voter of, a configuration that binds its id to another incarnation.
``IncarnationGuard`` is that rule, applied by the simulator to every core it runs (the real
one and the mutants) until the core has it; the checker assumes it (``LogMirror.counts_in``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from univrs.raft import RaftNode


class IncarnationGuard(RaftNode):
    """RaftNode that does not campaign where its id is bound to another incarnation."""

    def __init__(self, *args: Any, incarnation: str = "", **kwargs: Any) -> None:
        self.own_incarnation = incarnation
        super().__init__(*args, **kwargs)

    def _promotable(self) -> bool:
        if not super()._promotable():
            return False
        configs = self._configs
        m = configs.current
        if self.id not in m.voters:
            m = configs.committed(self._commit)
        listed = m.incarnation_of(self.id) if m.incarnations else None
        return listed is None or listed == self.own_incarnation


def guarded(factory: Callable[..., Any]) -> Callable[..., Any]:
    """The core class ``factory`` with the guard (``incarnation=`` becomes a keyword)."""
    if isinstance(factory, type) and issubclass(factory, RaftNode):
        if issubclass(factory, IncarnationGuard):
            return factory
        return type(f"Guarded{factory.__name__}", (IncarnationGuard, factory), {})

    def build(*args: Any, incarnation: str = "", **kwargs: Any) -> Any:
        return factory(*args, **kwargs)

    return build
