"""What a runtime shows the rest of the node: its status, its applied membership, changes.

``RuntimeView`` is made from the core before the runtime (``RaftRuntime`` takes it), so the
parts a server builds first can be given something to read: the transport's incarnation
check, the peer map's tracked peers and the metrics' gauges read the view, and the runtime
then gets the finished transport, peer map and metrics. The driver publishes into the view
(``refresh``, ``mark_stale``), the apply loop sets ``applied_membership``; everybody else
only reads.

``status()`` is rebuilt lazily: the core's full status (with every peer's progress) is built
at most once per driver step, and only if somebody asks. Reading the core from another task
is safe: only the driver changes it, and never while another task runs (Trio is cooperative).
"""

from __future__ import annotations

import attrs
import trio

from univrs.raft.messages import Membership
from univrs.raft.node import RaftNode
from univrs.raft.ready import Status


@attrs.define(eq=False)
class RuntimeView:
    """The runtime's published state (see the module docstring)."""

    core: RaftNode
    # The configuration of the applied log (the newest CONFIG entry or snapshot applied here),
    # which may lag the core's newest (appended) one. Set by the apply loop only.
    applied_membership: Membership = Membership(voters=frozenset())
    _status: Status = attrs.field(init=False)
    # _status is out of date (a step changed something ``refresh`` does not watch).
    _stale: bool = attrs.field(default=False, init=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        self._status = self.core.status()

    def status(self) -> Status:
        """The core's status as of the last driver step (safe from any task)."""
        if self._stale:
            self._status = self.core.status()
            self._stale = False
        return self._status

    def last_status(self) -> Status:
        """The status as last built, without rebuilding it (role, leader, term and commit are
        always current: the driver refreshes after every step that changes them)."""
        return self._status

    async def wait_changed(self) -> None:
        """Wait until the status next changes (role, leader, term, commit or applied)."""
        await self._changed.wait()

    # ---------------------------------------------------------------- the driver's side

    def mark_stale(self) -> None:
        """The core changed in ways nobody waits on (last index, peers' progress)."""
        self._stale = True

    def refresh(self) -> Status:
        """Rebuild the status now and wake ``wait_changed`` if a watched field changed."""
        status = self.core.status()
        old = self._status
        self._status = status
        self._stale = False
        if (
            status.role != old.role
            or status.leader != old.leader
            or status.term != old.term
            or status.commit != old.commit
            or status.applied != old.applied
        ):
            self._changed.set()
            self._changed = trio.Event()
        return status
