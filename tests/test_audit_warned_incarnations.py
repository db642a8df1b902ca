"""s13-audit: refusals of a listed id at made-up incarnations are logged at WARNING a bounded
number of times.

Without TLS, anyone reaching the raft port may dial under a listed member's id with another
incarnation each time: each was refused (right) with a WARNING of its own and a key kept
for the node's lifetime (the other refusal logs of the transport are keyed by remote host
and bounded at 1,024 keys)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from tests.net.helpers import Network, heartbeat, wait_until
from univrs.net import inbound
from univrs.net.transport import open_transport

BOUND = 3
DIALS = 8


async def test_made_up_incarnations_are_warned_of_a_bounded_number_of_times(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fails on the old code: every made-up incarnation got a WARNING (8, not 3)."""
    monkeypatch.setattr(inbound, "MAX_WARNED_INCARNATIONS", BOUND, raising=False)
    caplog.set_level(logging.DEBUG, logger="univrs.net")
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        b, _ = net.listener(incarnation="b0", bound={"a": "0" * 16})
        async with open_transport(b):
            for i in range(DIALS):
                a, _ = net.dialer(incarnation=f"{i + 1:016x}")
                async with open_transport(a):
                    a.send(heartbeat("a", "b", ctx=1))
                    await wait_until(lambda: "b" in a.stopped_links(), timeout=30)  # noqa: B023
            assert b.statistics().rejected_connections >= DIALS
        nursery.cancel_scope.cancel()
    refusals = [
        r
        for r in caplog.records
        if r.name == "univrs.net" and "refusing raft connection from a" in r.getMessage()
    ]
    assert len(refusals) >= DIALS
    assert sum(r.levelno == logging.WARNING for r in refusals) == BOUND
