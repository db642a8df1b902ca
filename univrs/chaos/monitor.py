"""Watching the cluster during a run: who leads, and for how long nobody did.

``Monitor.sample()`` asks every node for ``/v1/node/status`` at once (a short deadline each:
a paused node simply does not answer). ``run`` samples periodically and keeps the samples;
``leaderless_windows`` turns them into the intervals without an agreed leader, and
``leader_of`` answers "who leads now" for the fault injector, ``time_to_leader`` how long
nodes a partition cut off took to follow the leader again once it healed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import attrs
import h11
import trio

from univrs.net.http import get_json

STATUS_TIMEOUT = 0.5
HEAL_WATCH_TIMEOUT = 15.0  # seconds a healed node is watched for following the leader
HEAL_WATCH_EVERY = 0.05  # seconds between two samples while watching
# What a GET of a node that is down, paused or restarting may raise.
FETCH_ERRORS = (
    OSError,
    ValueError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    h11.ProtocolError,
)


async def fetch_json(addr: str, path: str, timeout: float) -> Any:
    """GET a JSON document from a node's API, or None when it does not answer properly."""
    try:
        return await get_json(addr, path, timeout=timeout)
    except FETCH_ERRORS:
        return None


@attrs.frozen(kw_only=True)
class Sample:
    """One round of status answers: node id -> its status document (None: no answer)."""

    time: float
    views: tuple[tuple[str, Any], ...]

    def view(self, node_id: str) -> dict[str, Any] | None:
        return dict(self.views).get(node_id)


def agreed_leader(views: dict[str, dict[str, Any] | None], size: int) -> str | None:
    """The node that claims to lead and that a majority of the voters follow in its term, if
    any. The voters are the claimed leader's own list when its view has one (membership
    changes), else ``size`` nodes."""
    for node_id, v in views.items():
        if not v or v.get("role") != "leader":
            continue
        voters = v.get("voters")
        agree = sum(
            1
            for other, w in views.items()
            if w
            and w.get("leader") == node_id
            and w.get("term") == v.get("term")
            and (voters is None or other in voters)
        )
        if agree * 2 > (len(voters) if voters else size):
            return node_id
    return None


@attrs.define(eq=False)
class Monitor:
    """Samples the nodes' status (see the module docstring)."""

    api: dict[str, str]  # node id -> API address
    t0: float
    samples: list[Sample] = attrs.field(factory=list)

    async def sample(self) -> Sample:
        views: dict[str, Any] = {}

        async def one(node_id: str, addr: str) -> None:
            views[node_id] = await fetch_json(addr, "/v1/node/status", STATUS_TIMEOUT)

        async with trio.open_nursery() as nursery:
            for node_id, addr in self.api.items():
                nursery.start_soon(one, node_id, addr)
        return Sample(time=trio.current_time() - self.t0, views=tuple(sorted(views.items())))

    async def leader_of(self) -> str | None:
        s = await self.sample()
        return agreed_leader(dict(s.views), len(self.api))

    async def time_to_leader(
        self, nodes: Iterable[str], members: Collection[str], timeout: float = HEAL_WATCH_TIMEOUT
    ) -> dict[str, float | None]:
        """Seconds from now until each of ``nodes`` follows (or is) the agreed leader, in that
        leader's term: how long a healed node stays without a leader (its clients get 503).
        The leader is agreed among ``len(members)`` voters, counted at each sample (a
        membership fault may change them meanwhile). Sampled every ``HEAL_WATCH_EVERY`` s; a
        time is taken when the sample's answers are in."""
        healed = trio.current_time()
        out: dict[str, float | None] = {n: None for n in nodes}
        with trio.move_on_after(timeout):
            while any(v is None for v in out.values()):
                s = await self.sample()
                views = dict(s.views)
                leader = agreed_leader(views, len(members))
                term = (views.get(leader) or {}).get("term") if leader else None
                for n, took in out.items():
                    v = views.get(n) or {}
                    following = leader is not None and v.get("leader") == leader
                    if took is None and following and v.get("term") == term:
                        out[n] = round(trio.current_time() - healed, 3)
                await trio.sleep(HEAL_WATCH_EVERY)
        return out

    async def run(self, every: float = 0.2) -> None:
        """Sample until cancelled."""
        while True:
            self.samples.append(await self.sample())
            await trio.sleep(every)


def leaderless_windows(
    samples: list[Sample], size: int, start: float, end: float
) -> list[tuple[float, float]]:
    """Intervals within [start, end] during which no sample showed an agreed leader (from the
    first such sample to the next sample with one, or ``end``)."""
    out: list[tuple[float, float]] = []
    since: float | None = None
    for s in samples:
        if s.time < start or s.time > end:
            continue
        has = agreed_leader(dict(s.views), size) is not None
        if not has and since is None:
            since = s.time
        elif has and since is not None:
            out.append((since, s.time))
            since = None
    if since is not None:
        out.append((since, end))
    return out
