"""The bottom layer of the simulated runtime: the event queue, draining Ready batches, and the
checks every layer above uses (the chain is drawn in runtime.py).

``drain`` hands each Ready of a node to the interpreter (univrs/raft/interpreter.py
``execute``) with the node's effects (``SimNode.fx``, runtime.py ``NodeEffects``, built when the
process starts): that object, not a method of this chain, is how a Ready reaches the layers
above (storage, sending, applying), as the Trio driver's effects are how a Ready reaches its
writer, transport and apply loop. A layer calls only methods of its own layer or of the layers
below it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from univrs.raft.interpreter import execute
from univrs.raft.messages import Entry, EntryKind
from univrs.raft.ready import Ready, Role
from univrs.sim.checker import Checker
from univrs.sim.invariants import ACK_LATER, COMPACTION_BOUND, CORE_INVARIANT, InvariantViolation
from univrs.sim.node import SimNode


class RuntimeBase:
    """The event queue's ``at``, Ready draining and the shared checks. Simulation (cluster.py)
    sets the fields each layer declares (here: those this layer uses) and runs the event
    queue that ``at`` fills."""

    checker: Checker
    now: int
    _heap: list[tuple[int, int, Callable[[Any], None], Any]]
    _seq: int

    def at(self, time: int, fn: Callable[[Any], None], arg: Any) -> None:
        """Call ``fn(arg)`` at simulated ``time`` (after every event already due then)."""
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, fn, arg))

    # ----------------------------------------------------------------- acks left for later

    def settle(self, sn: SimNode) -> None:
        """Step the acknowledgement left for ``sn``'s next input (``SimNode.later``), before
        that input, as the Trio driver steps its inbox's ``later`` at the start of a step
        (univrs/runtime/step.py ``_take_persisted``). Every input to a node calls this first.
        The core said stepping it changes nothing it does before its next input
        (``RaftNode.append_response_may_wait``): if it leaves the core with a Ready (a message
        to send, a commit, a hard state, a read), that was wrong (ack-later)."""
        msg = sn.later
        if msg is None:
            return
        sn.later = None
        raft = sn.raft
        if raft is None:
            return  # (the process died meanwhile: the message died with it)
        raft.step(msg)
        if raft.has_ready():
            raise InvariantViolation(
                ACK_LATER,
                f"{sn.id}: {msg!r}, left for its next input as changing nothing, "
                "made a Ready when stepped",
            )
        self.drain(sn)

    # ----------------------------------------------------------------- Ready handling

    def drain(self, sn: SimNode) -> None:
        """Hand every pending Ready of ``sn`` to the simulated runtime, then check the core's
        own invariants (``RaftNode.problems``; called after every input to a node)."""
        raft = sn.raft
        if raft is None:
            return
        # Handling a Ready feeds the node new input only through applied(); without committed
        # entries nothing new can be pending, so one has_ready() per batch is enough.
        while raft.has_ready():
            rd = raft.ready()
            self._handle_ready(sn, rd)
            if not rd.committed and rd.snapshot is None:
                break
        problems = raft.problems()
        if problems:  # an explicit raise: the check survives python -O
            raise InvariantViolation(CORE_INVARIANT, "; ".join(problems))

    def _handle_ready(self, sn: SimNode, rd: Ready) -> None:
        # What the checker mirrors comes first, in the Ready's own order (a snapshot resets the
        # log before its entries; the commit is judged by the role held before this Ready).
        nid = sn.id
        chk = self.checker
        hs = rd.hard_state
        install = rd.snapshot
        if install is not None:
            meta = install.meta
            chk.observe_snapshot(
                nid, meta.index, meta.term, durable=False, membership=meta.membership
            )
        if hs is not None:
            chk.observe_term(nid, hs.term)
        if rd.truncate_from is not None or rd.entries:
            chk.observe_issued(nid, rd.truncate_from, rd.entries, rd.soft_state is None)
        if hs is not None:
            chk.observe_commit(
                nid, hs.commit, leading=rd.soft_state is None and sn.role is Role.LEADER
            )
        config = _has_config(rd.entries)
        if config and sn.role is Role.LEADER and rd.soft_state is None:
            chk.observe_leader_config(nid)
        assert sn.fx is not None
        execute(rd, sn.fx)
        if install is not None or rd.truncate_from is not None or config:
            self._refresh_listing(sn)

    def _refresh_listing(self, sn: SimNode) -> None:
        m, index = self.checker.current_config(sn.id)
        sn.listed = dict(m.incarnations)
        sn.configured = m.members
        sn.cfg_index = index
        sn.bound_at = index if sn.listed.get(sn.id) == sn.disk.incarnation else 0

    def _check_compaction(self, sn: SimNode) -> None:
        """The core never drops log entries it has not applied and committed (dissertation
        5.1): ``first_index - 1 <= min(applied, commit)``. The log's start moves only when the
        core compacts (``snapshot_taken``) or installs a snapshot, so it is checked then."""
        assert sn.raft is not None
        st = sn.raft.status()
        if st.first_index - 1 > min(st.applied, st.commit):
            raise InvariantViolation(
                COMPACTION_BOUND,
                f"{sn.id} compacted its log up to {st.first_index - 1}, past what it applied "
                f"({st.applied}) or committed ({st.commit})",
            )


def _has_config(entries: tuple[Entry, ...]) -> bool:
    return any(e.kind is EntryKind.CONFIG for e in entries)
