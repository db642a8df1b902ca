"""Network faults: which links a fault cuts, and the policy each link gets.

There is one fault proxy (``univrs.chaos.proxy``) per ordered pair of nodes, so a link is a
``(sender, receiver)`` pair and one-way faults are possible. Several network faults may
overlap: ``LinkFaults`` keeps each fault's contribution per link, and a link gets their
combination (``combine``: partitioned if any partitions it, the largest delay, loss, ...).
``partition_links`` works out the links a partition cuts (isolate, one-way, bridge, halves);
the injector (``univrs.chaos.faults``) decides when.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import attrs

from univrs.chaos.proxy import PASS, FaultProxy, LinkPolicy

Link = tuple[str, str]


def combine(policies: Iterable[LinkPolicy]) -> LinkPolicy:
    """The policy of a link under several faults at once."""
    ps = list(policies)
    if not ps:
        return PASS
    return LinkPolicy(
        partitioned=any(p.partitioned for p in ps),
        delay=max(p.delay for p in ps),
        jitter=max(p.jitter for p in ps),
        loss=max(p.loss for p in ps),
        loss_stall=max(p.loss_stall for p in ps),
        reset_rate=max(p.reset_rate for p in ps),
        retransmit=any(p.retransmit for p in ps),
    )


def partition_links(
    mode: str,
    nodes: list[str],
    target: str,
    leader: str | None,
    side: str,
    direction: str,
    rng: random.Random,
) -> tuple[set[Link], str, tuple[str, ...]]:
    """The ordered links a partition cuts, a description of its sides, and the nodes it is
    about (the target, or the minority of a split in halves)."""
    others = [n for n in nodes if n != target]
    if mode == "isolate":
        links = {(target, o) for o in others} | {(o, target) for o in others}
        return links, f"{target} | {','.join(others)}", (target,)
    if mode == "one-way":
        if direction == "out":
            return {(target, o) for o in others}, f"{target} -/-> {','.join(others)}", (target,)
        return {(o, target) for o in others}, f"{','.join(others)} -/-> {target}", (target,)
    if mode == "bridge":
        rest = others[:]
        rng.shuffle(rest)
        half = len(rest) // 2
        a, b = sorted(rest[:half]), sorted(rest[half:])
        links = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
        return links, f"{','.join(a)} | {','.join(b)} bridged by {target}", (target,)
    # halves: a minority and a majority; `side` says where the leader goes
    size = max(1, (len(nodes) - 1) // 2)
    pool = [n for n in nodes if n != leader] if leader else nodes[:]
    rng.shuffle(pool)
    if leader and side == "minority":
        minority = [leader, *pool[: size - 1]]
    elif leader and side == "majority":
        minority = pool[:size]
    else:
        everyone = nodes[:]
        rng.shuffle(everyone)
        minority = everyone[:size]
    majority = [n for n in nodes if n not in minority]
    links = {(x, y) for x in minority for y in majority} | {
        (y, x) for x in minority for y in majority
    }
    sides = f"{','.join(sorted(minority))} | {','.join(sorted(majority))}"
    return links, sides, tuple(sorted(minority))


@attrs.define(eq=False)
class LinkFaults:
    """The network faults in force: each fault's policy per link, applied to the proxies."""

    proxies: dict[Link, FaultProxy]
    _net: dict[Link, dict[int, LinkPolicy]] = attrs.field(factory=dict)

    def _apply(self) -> None:
        for link, proxy in self.proxies.items():
            proxy.set_policy(combine(self._net.get(link, {}).values()))

    def add(self, fault: int, links: Iterable[Link], policy: LinkPolicy) -> None:
        """Fault ``fault`` (its index) gives ``links`` this policy, on top of the others."""
        for link in links:
            self._net.setdefault(link, {})[fault] = policy
        self._apply()

    def remove(self, fault: int) -> None:
        """Fault ``fault`` no longer touches any link."""
        for contributions in self._net.values():
            contributions.pop(fault, None)
        self._apply()

    def heal(self) -> None:
        """Every link passes."""
        self._net.clear()
        self._apply()

    def of(self, target: str | None) -> set[Link]:
        """The links of ``target`` (either way), or every link (None or ``all``)."""
        if target is None or target == "all":
            return set(self.proxies)
        return {link for link in self.proxies if target in link}

    def reset(self, target: str | None) -> int:
        """Reset every connection on the links of ``target``; how many there were."""
        return sum(self.proxies[link].reset_connections() for link in self.of(target))
