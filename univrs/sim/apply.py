"""The apply layer of the simulated runtime: committed entries into the node's KvStore.

Committed entries are applied in order (an entry out of order breaks the Ready contract), each
reported to the checker and the API; with the LMDB state backend a chunk is one transaction
with its applied index, unless a snapshot from the leader is not durable yet. Then
``applied(index)`` is reported to the core: at once, or (``Profile.apply_lag``) a little later,
as a runtime whose apply loop runs apart from the core would. Nodes snapshot their KvStore now
and then, right after applying (``Profile.snap_every``; the storage layer stores it). With a
lagging ``applied()`` the snapshot can be ahead of what the core knows is applied: the core
must not compact past that (compaction-bound, checked after every compaction and install).
"""

from __future__ import annotations

from univrs.raft.messages import Entry
from univrs.sim.api import SimApi
from univrs.sim.invariants import READY_CONTRACT, InvariantViolation
from univrs.sim.kv import WriteDecoder
from univrs.sim.node import SimNode
from univrs.sim.storage import StorageLayer


class ApplyLayer(StorageLayer):
    """Applying committed entries and reporting ``applied`` (over storage)."""

    decoder: WriteDecoder
    api: SimApi

    def _apply(self, sn: SimNode, committed: tuple[Entry, ...]) -> None:
        kv = sn.kv
        chk = self.checker
        writes_of = self.decoder.writes_of
        config_of = self.decoder.config_of
        on_applied = self.api.on_applied
        state = None if sn.state_stale else sn.disk.state
        keys: set[str] = set()
        clients: set[int] = set()
        for e in committed:
            if e.index != kv.applied + 1:
                raise InvariantViolation(
                    READY_CONTRACT,
                    f"{sn.id} was handed entry {e.index} to apply after applying {kv.applied}",
                )
            ws = writes_of(e)
            outcomes = kv.apply(e, ws, config_of(e))
            chk.observe_apply(sn.id, e, ws, [effect for _, effect in outcomes] if ws else ())
            on_applied(sn, e.index, e.term, [result for result, _ in outcomes])
            if state is not None:
                for w in ws:
                    if w.key in kv.data:
                        keys.add(w.key)
                    if w.keyed:
                        clients.add(w.client)
        if state is not None and committed:
            state.commit(kv, keys, clients)  # one transaction per chunk, with its applied index
        p = self.schedule.profile
        every = p.snap_every
        if every and kv.applied - sn.snap_at >= every:
            self._take_snapshot(sn)
        if p.apply_lag:
            lag = int(self.rng.random() * p.apply_lag)
            self.at(self.now + lag, self._report_applied, (sn, sn.life, kv.applied))
        else:
            assert sn.raft is not None
            sn.raft.applied(kv.applied)

    def _report_applied(self, arg: tuple[SimNode, int, int]) -> None:
        """The apply loop tells the core how far it got (``Profile.apply_lag``)."""
        sn, life, index = arg
        if sn.life != life or sn.raft is None:
            return
        if sn.paused:
            sn.backlog.append((self._report_applied, arg))
            return
        self.settle(sn)
        sn.raft.applied(index)
        self.drain(sn)
