"""What a runtime shows the rest of the node: its status, its applied membership, changes.

``RuntimeView`` is made from the core before the runtime (``RaftRuntime`` takes it), so the
parts a server builds first can be given something to read: the transport's incarnation
check, the peer map's tracked peers and the metrics' gauges read the view, and the runtime
then gets the finished transport, peer map and metrics. The driver publishes into the view
(``refresh``, ``mark_stale``, ``note_applied``), the apply loop sets ``applied_membership``;
everybody else only reads.

Two kinds of waits, so that a waiter pays only for what it watches (issue 14: one write used
to wake every status watcher twice, at its commit and at its apply):

* ``wait_changed``: the status's *shape* changed: role, leader, term, the newest membership
  (or its log index) or the applied membership. Commit and apply progress do not wake it.
* ``wait_applied(index)``: the applied index reached ``index``. Waiters wait on a threshold,
  and only the report that crosses it wakes them.

Both wake in the driver's step that takes in the apply loop's ``Applied`` report, as every
status wake-up did before: a watcher never acts on an applied configuration (the transport
closing the links of members it no longer lists, say) before the driver has taken in the
apply and sent what that step sends.

``status()`` is rebuilt lazily: the core's full status (with every peer's progress) is built
at most once per driver step, and only if somebody asks. Reading the core from another task
is safe: only the driver changes it, and never while another task runs (Trio is cooperative).
"""

from __future__ import annotations

import heapq

import attrs
import trio

from univrs.raft.messages import Membership
from univrs.raft.node import RaftNode
from univrs.raft.ready import Status


@attrs.define(eq=False)
class RuntimeView:
    """The runtime's published state (see the module docstring)."""

    core: RaftNode
    # The configuration of the applied log (see the ``applied_membership`` property).
    _applied_membership: Membership = attrs.field(
        default=Membership(voters=frozenset()), alias="applied_membership"
    )
    _status: Status = attrs.field(init=False)
    # _status is out of date (a step changed something ``refresh`` does not watch).
    _stale: bool = attrs.field(default=False, init=False)
    # _status is out of date in its commit or applied index too (``mark_moved``):
    # ``last_status`` rebuilds it before it hands it out.
    _commit_stale: bool = attrs.field(default=False, init=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    # The apply loop set another applied membership since the last ``refresh``.
    _membership_applied: bool = attrs.field(default=False, init=False)
    # Some membership the apply loop set listed this node (``listed_self``).
    _listed_self: bool = attrs.field(default=False, init=False)
    # The apply loop's applied index, as last reported (``note_applied``).
    _applied: int = attrs.field(init=False)
    # wait_applied's thresholds: one event per index somebody waits for, and a heap of them.
    _applied_waits: dict[int, trio.Event] = attrs.field(factory=dict, init=False)
    _thresholds: list[int] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        self._status = self.core.status()
        self._applied = self._status.applied
        self._listed_self = self.core.id in self._applied_membership.members

    @property
    def listed_self(self) -> bool:
        """Did any membership applied here (or the one it started with) list this node? A
        watcher that looks only now and then misses the configurations applied between two
        looks: a node added and removed again within them was listed by one of them."""
        return self._listed_self

    @property
    def applied_membership(self) -> Membership:
        """The configuration of the applied log (the newest CONFIG entry or snapshot applied
        here), which may lag the core's newest (appended) one. Set by the apply loop only;
        another one wakes ``wait_changed`` at the driver's next ``refresh``."""
        return self._applied_membership

    @applied_membership.setter
    def applied_membership(self, membership: Membership) -> None:
        if membership is not self._applied_membership:
            self._applied_membership = membership
            self._membership_applied = True
            if self.core.id in membership.members:
                self._listed_self = True

    @property
    def membership_applied(self) -> bool:
        """The apply loop set another applied membership since the last ``refresh``."""
        return self._membership_applied

    @property
    def applied_index(self) -> int:
        """The applied index as of the driver's last ``Applied`` report (``note_applied``)."""
        return self._applied

    def status(self) -> Status:
        """The core's status as of the last driver step (safe from any task)."""
        if self._stale:
            self._status = self.core.status()
            self._stale = self._commit_stale = False
        return self._status

    def last_status(self) -> Status:
        """The status as last built, without rebuilding it (role, leader, term and commit are
        always current: the driver refreshes after every step that changes the first three,
        and a step that moved only the commit or applied index has it rebuilt here, at the
        first look after it: ``mark_moved``)."""
        if self._commit_stale:
            return self.status()
        return self._status

    def last_built(self) -> Status:
        """The status as last built, never rebuilt: role, leader, term, vote, pins and the
        membership are current, the commit and applied index may lag (``mark_moved``). The
        driver's own reads."""
        return self._status

    async def wait_changed(self) -> None:
        """Wait until the role, leader, term, membership (the newest or the applied one) or
        its log index next changes. Commit and apply progress do not wake it: wait for an
        index with ``wait_applied``. Callers re-check their condition after it returns, and
        bound the wait with a deadline when they also watch something else."""
        await self._changed.wait()

    async def wait_applied(self, index: int) -> None:
        """Return once the apply loop has applied ``index`` (at once if it has). Only the
        report that reaches ``index`` wakes this waiter, not every apply before it."""
        if self._applied >= index:
            return
        event = self._applied_waits.get(index)
        if event is None:
            event = self._applied_waits[index] = trio.Event()
            heapq.heappush(self._thresholds, index)
        try:
            await event.wait()
        finally:
            # Abandoned (deadline, cancellation) by its last waiter: forget the threshold, so
            # waits for indexes never applied (no quorum) do not pile up.
            abandoned = not event.is_set() and event.statistics().tasks_waiting == 0
            if abandoned and self._applied_waits.get(index) is event:
                del self._applied_waits[index]
                self._thresholds = sorted(self._applied_waits)  # a sorted list is a heap

    # ---------------------------------------------------------------- the driver's side

    def note_applied(self, index: int) -> None:
        """The apply loop's report that everything up to ``index`` is applied (taken in by
        the driver, or left for its next step: step.py ``_applied_later``): wake the
        ``wait_applied`` waiters whose threshold it reaches (only those). A report below one
        taken before (the loop's, after an apply on the driver's step) changes nothing."""
        if index <= self._applied:
            return
        self._applied = index
        thresholds = self._thresholds
        while thresholds and thresholds[0] <= index:
            self._applied_waits.pop(heapq.heappop(thresholds)).set()

    def mark_stale(self) -> None:
        """The core changed in ways nobody waits on (last index, peers' progress)."""
        self._stale = True

    def mark_moved(self) -> None:
        """Like ``mark_stale``, for a step that moved the commit or the applied index and
        changed nothing ``wait_changed`` watches (role, leader, term, memberships) nor the
        vote or pins: the status is rebuilt at the next look (``status`` or ``last_status``),
        not now, where ``refresh`` rebuilt it at every such step (a follower's append and
        commit notice, every batch; session 30)."""
        self._stale = self._commit_stale = True

    def refresh(self) -> Status:
        """Rebuild the status now and wake ``wait_changed`` if a watched field or the applied
        membership changed."""
        status = self.core.status()
        old = self._status
        self._status = status
        self._stale = self._commit_stale = False
        if (
            self._membership_applied
            or status.role != old.role
            or status.leader != old.leader
            or status.term != old.term
            or status.config_index != old.config_index
            or status.membership is not old.membership
        ):
            self._membership_applied = False
            self._changed.set()
            self._changed = trio.Event()
        return status
