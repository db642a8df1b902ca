"""The simulated network: seeded loss, latency, duplication, reordering and partitions.

The network decides, when a message is sent, at which simulated times (if any) it arrives:
none (dropped), one, or two (duplicated). Latency is uniform in [lat_min, lat_max] with rare
long "spikes", so messages overtake one another. A partition is a set of blocked directed
links; several partition rules may be active at once (the blocked set is their union). A link
is checked both when a message is sent and when it would be delivered, so a partition also cuts
messages already in flight.
"""

from __future__ import annotations

import random

import attrs

from univrs.raft.messages import NodeId

Link = tuple[NodeId, NodeId]


@attrs.define(eq=False)
class SimNetwork:
    """Network fault state. Times are simulated time units (see univrs.sim.cluster.TICK)."""

    rng: random.Random
    drop: float = 0.0  # base loss probability of each message
    dup: float = 0.0  # probability a message is delivered twice
    lat_min: int = 1
    lat_max: int = 10
    spike: float = 0.0  # probability of an extra delay of up to spike_max
    spike_max: int = 100
    blocked: set[Link] = attrs.field(factory=set)
    _rules: dict[int, frozenset[Link]] = attrs.field(factory=dict)
    _loss_rules: dict[int, float] = attrs.field(factory=dict)
    # Gray failures: loss on everything one node sends (a failing NIC), by rule id.
    _tx_rules: dict[int, tuple[NodeId, float]] = attrs.field(factory=dict)
    _tx_loss: dict[NodeId, float] = attrs.field(factory=dict)
    _drop_now: float = 0.0
    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    refused: int = 0  # delivered, but refused: the sender is not the incarnation listed

    def __attrs_post_init__(self) -> None:
        self._drop_now = self.drop

    def delays(self, src: NodeId, dst: NodeId) -> tuple[int, ...]:
        """Delivery delays of one message from src to dst: () if lost, two if duplicated."""
        self.sent += 1
        if self.blocked and (src, dst) in self.blocked:
            self.dropped += 1
            return ()
        r = self.rng.random
        if self._drop_now and r() < self._drop_now:
            self.dropped += 1
            return ()
        if self._tx_loss and r() < self._tx_loss.get(src, 0.0):
            self.dropped += 1
            return ()
        span = self.lat_max - self.lat_min + 1
        d = self.lat_min + int(r() * span)
        if self.spike and r() < self.spike:
            d += int(r() * self.spike_max)
        if self.dup and r() < self.dup:
            self.duplicated += 1
            return (d, self.lat_min + int(r() * span) + int(r() * self.spike_max))
        return (d,)

    def is_blocked(self, src: NodeId, dst: NodeId) -> bool:
        return bool(self.blocked) and (src, dst) in self.blocked

    def add_partition(self, rule_id: int, links: frozenset[Link]) -> None:
        self._rules[rule_id] = links
        self.blocked |= links

    def remove_partition(self, rule_id: int) -> None:
        if self._rules.pop(rule_id, None) is not None:
            self.blocked = set().union(*self._rules.values())

    def add_loss(self, rule_id: int, rate: float) -> None:
        self._loss_rules[rule_id] = rate
        self._drop_now = max(self.drop, *self._loss_rules.values())

    def remove_loss(self, rule_id: int) -> None:
        self._loss_rules.pop(rule_id, None)
        self._drop_now = max(self.drop, *self._loss_rules.values(), 0.0)

    def add_tx_loss(self, rule_id: int, src: NodeId, rate: float) -> None:
        self._tx_rules[rule_id] = (src, rate)
        self._recompute_tx()

    def remove_tx_loss(self, rule_id: int) -> None:
        if self._tx_rules.pop(rule_id, None) is not None:
            self._recompute_tx()

    def _recompute_tx(self) -> None:
        loss: dict[NodeId, float] = {}
        for src, rate in self._tx_rules.values():
            loss[src] = max(rate, loss.get(src, 0.0))
        self._tx_loss = loss

    def heal(self) -> None:
        """End of the fault phase: no partitions, no loss, no duplicates, no spikes."""
        self._rules.clear()
        self._loss_rules.clear()
        self._tx_rules.clear()
        self._tx_loss = {}
        self.blocked = set()
        self.drop = self._drop_now = 0.0
        self.dup = 0.0
        self.spike = 0.0
