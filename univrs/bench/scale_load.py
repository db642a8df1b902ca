"""The client load of the cluster bench (``univrs.bench.scale_cluster``) and what its times say.

``Load`` runs 64 closed-loop writers (``workload.scale`` on keyed workloads of the generated
state, over 8 shared fast-protocol connections) and, when asked, one reader paging
``workload.list`` with ``limit=100`` from random ``after`` ids (linearizable); it records the
time of every acknowledgement and every page's latency. ``percentile`` and ``longest_gap``
turn those into figures: page p50 / p99, and the longest gap between two acknowledgements
across a window (a stall of the leader's loop shows as a gap above a heartbeat).
"""

from __future__ import annotations

import functools
import itertools
import random
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

__all__ = ["CONNECTIONS", "PAGE_LIMIT", "WRITERS", "Load", "longest_gap", "percentile"]

WRITERS = 64  # closed-loop write clients (the "64-client write load")
CONNECTIONS = 8  # client connections the writers share
PAGE_LIMIT = 100


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile ``q`` of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def longest_gap(times: list[float], start: float, end: float) -> float | None:
    """The longest time between two consecutive acknowledgements around ``[start, end]``:
    from the last one before ``start`` to the first one after ``end`` (so a stall over the
    whole window counts whole)."""
    ordered = sorted(times)
    before = [t for t in ordered if t < start]
    inside = [t for t in ordered if start <= t <= end]
    after = [t for t in ordered if t > end]
    points = before[-1:] + inside + after[:1]
    if len(points) < 2:
        return None
    return max(b - a for a, b in itertools.pairwise(points))


@attrs.define
class Load:
    """The write load and the page reader of one measured window."""

    endpoints: list[str]
    n: int
    acks: list[float] = attrs.field(factory=list)
    pages: list[float] = attrs.field(factory=list)
    # With ``reader="thread"``: pages read at ``consistency="local"`` (no read barrier),
    # taken in turn with the linearizable ones, so the barrier's share shows client-side.
    local_pages: list[float] = attrs.field(factory=list)
    # ... and one workload read locally (no barrier, no scan: the request's trip alone).
    local_gets: list[float] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)
    page_errors: list[str] = attrs.field(factory=list)
    # The measured window (perf_counter) and the leader's applied index at its ends.
    window: list[float] = attrs.field(factory=list)
    applied: list[int] = attrs.field(factory=list)

    async def run(
        self,
        seconds: float,
        *,
        reader: str | None,
        during: Callable[[], Any] | None = None,
        applied: Callable[[], int] | None = None,
        stall_grace: float = 60.0,
    ) -> bool:
        """Load for ``seconds`` once the clients are connected (``during``, an async function,
        runs then; the load lasts until it returned; ``applied``, the leader's applied index,
        is read at both ends of the window); False if it had to be abandoned (stalled).
        ``reader``: None (no page reader), ``"loop"`` (on this loop, beside the writers) or
        ``"thread"``: the page reader runs on its own event loop in a worker thread
        (its own connection), so its pages do not wait behind the 64 writers' tasks on this
        process's loop; it takes in turn a linearizable page, a local page and a local read
        of one workload."""
        from contextlib import AsyncExitStack

        from univrs.client import open_client
        from univrs.errors import UnivrsError

        stop = [False]
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(open_client(self.endpoints, timeout=30))
                for _ in range(CONNECTIONS)
            ]
            page_client = await stack.enter_async_context(open_client(self.endpoints, timeout=30))

            async def writer(i: int) -> None:
                client = clients[i % len(clients)]
                k = i
                while not stop[0]:
                    k = (k + 7919) % self.n
                    try:
                        await client.scale_workload(f"wl-{k:08d}", k % 5)
                    except UnivrsError as exc:
                        self.errors.append(f"{exc.code}: {exc.message}")
                        continue
                    self.acks.append(time.perf_counter())

            async def page_reader() -> None:
                rng = random.Random(17)
                while not stop[0]:
                    after = f"wl-{rng.randrange(max(1, self.n - PAGE_LIMIT)):08d}"
                    t0 = time.perf_counter()
                    try:
                        page = await page_client.list_workloads(limit=PAGE_LIMIT, after=after)
                    except UnivrsError as exc:
                        self.page_errors.append(f"{exc.code}: {exc.message}")
                        continue
                    self.pages.append(time.perf_counter() - t0)
                    if not page["items"]:
                        self.page_errors.append(f"empty page after {after}")

            def pages_in_thread() -> None:
                async def loop() -> None:
                    rng = random.Random(17)
                    async with open_client(self.endpoints, timeout=30) as client:
                        for turn in itertools.count():
                            if stop[0]:
                                return
                            k = rng.randrange(max(1, self.n - PAGE_LIMIT))
                            kind = turn % 3  # linearizable page, local page, local get
                            t0 = time.perf_counter()
                            try:
                                if kind == 2:
                                    await client.get_workload(f"wl-{k:08d}", consistency="local")
                                    self.local_gets.append(time.perf_counter() - t0)
                                    continue
                                page = await client.list_workloads(
                                    limit=PAGE_LIMIT,
                                    after=f"wl-{k:08d}",
                                    consistency="local" if kind == 1 else None,
                                )
                            except UnivrsError as exc:
                                self.page_errors.append(f"{exc.code}: {exc.message}")
                                continue
                            (self.local_pages if kind == 1 else self.pages).append(
                                time.perf_counter() - t0
                            )
                            if not page["items"]:
                                self.page_errors.append(f"empty page after wl-{k:08d}")

                trio.run(loop)

            async def timer() -> None:
                if applied is not None:
                    self.applied.append(await trio.to_thread.run_sync(applied))
                self.window.append(time.perf_counter())
                await trio.sleep(seconds)  # the measured window (a duration, not a sync)
                if during is not None:
                    await during()
                stop[0] = True
                self.window.append(time.perf_counter())
                if applied is not None:
                    self.applied.append(await trio.to_thread.run_sync(applied))

            with trio.move_on_after(seconds + stall_grace) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(timer)
                    for i in range(WRITERS):
                        nursery.start_soon(writer, i)
                    if reader == "thread":
                        nursery.start_soon(
                            functools.partial(
                                trio.to_thread.run_sync, pages_in_thread, abandon_on_cancel=True
                            )
                        )
                    elif reader == "loop":
                        nursery.start_soon(page_reader)
            return not scope.cancelled_caught
