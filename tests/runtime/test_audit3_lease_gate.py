"""s14-audit L1: a leader lets its lease confirm a read only while every member announced a
vote hold at least its own (univrs/runtime/capabilities.py ``lease_gate``); else the read is
an ordinary ReadIndex read. tests/raft/test_raft_audit3_lease_mix.py shows the stale read a
shorter hold allows at the core."""

from __future__ import annotations

import random

import cbor2
import pytest
import trio
import trio.testing

from tests.runtime.memcluster import MemoryStore
from tests.runtime.test_driver import TICK, MemoryNet, leader_of, start_all, wait_until
from univrs.config import NodeConfig
from univrs.errors import ProtocolError
from univrs.net.hello import Hello, decode_hello, encode_hello
from univrs.raft import Membership, RaftNode, bootstrap_state
from univrs.raft.ready import RaftConfig
from univrs.runtime.capabilities import LeaseGate, lease_gate, lease_hold_ms
from univrs.runtime.driver import RaftRuntime
from univrs.server.wiring import transport_from_config
from univrs.sm.state import ClusterStateMachine

LEASE = RaftConfig(heartbeat_ticks=1, election_ticks_min=6, election_ticks_max=10, read_lease=True)
TICK_MS = round(TICK * 1000)
NEED = lease_hold_ms(LEASE, TICK_MS)
M3 = Membership(voters=frozenset({"a", "b", "c"}))


def test_hello_carries_the_hold() -> None:
    hello = Hello(version=1, cluster="x", src="a", dst="b", hold=450)
    assert decode_hello(encode_hello(hello)).hold == 450
    plain = Hello(version=1, cluster="x", src="a", dst="b")
    assert decode_hello(encode_hello(plain)).hold == 0  # absent: an older node, or leases off
    for bad in (-1, 2**31, True, "450"):
        raw = cbor2.loads(encode_hello(plain))
        raw["hold"] = bad
        with pytest.raises(ProtocolError, match="'hold'"):
            decode_hello(cbor2.dumps(raw))


def test_the_transport_announces_the_configured_hold() -> None:
    send, _ = trio.open_memory_channel[object](1)
    on = NodeConfig(read_lease=True)
    t = transport_from_config(on, inbox=send, rng=random.Random(1))
    assert t.lease_hold_ms == lease_hold_ms(on.raft_config(), on.tick_ms) > 0
    off = transport_from_config(NodeConfig(), inbox=send, rng=random.Random(1))
    assert off.lease_hold_ms == 0


def test_lease_gate_rules() -> None:
    both = (M3, M3)
    ok = {"b": (None, NEED), "c": (None, NEED + 1)}
    assert lease_gate("a", both, ok, NEED) is None
    assert "c has not announced" in str(lease_gate("a", both, {"b": (None, NEED)}, NEED))
    short = lease_gate("a", both, {**ok, "c": (None, NEED - 1)}, NEED)
    assert short is not None and "c refuses votes" in short
    assert "off" in str(lease_gate("a", both, ok, 0))
    # An announcement counts only from the incarnation the configuration binds.
    bound = Membership(voters=M3.voters, incarnations=(("b", "b1"), ("c", "c1")))
    assert lease_gate("a", (bound, bound), {"b": ("b1", NEED), "c": ("c1", NEED)}, NEED) is None
    assert "as c1" in str(
        lease_gate("a", (bound, bound), {"b": ("b1", NEED), "c": ("c2", NEED)}, NEED)
    )
    # Learners and the applied configuration's members count too.
    grown = Membership(voters=M3.voters, learners=frozenset({"d"}))
    assert "d has not" in str(lease_gate("a", (grown, M3), ok, NEED))
    assert "d has not" in str(lease_gate("a", (M3, grown), ok, NEED))


def test_lease_gate_counts_its_refusals_and_is_off_without_holds() -> None:
    holds = {"b": (None, NEED), "c": (None, 0)}
    gate = LeaseGate(own_id="a", need_ms=NEED, configurations=lambda: (M3, M3), holds=lambda: holds)
    assert not gate() and not gate() and gate.closed == 2
    holds["c"] = (None, NEED)
    assert gate() and gate.closed == 2
    unchecked = LeaseGate(own_id="a", need_ms=NEED, configurations=lambda: (M3, M3), holds=None)
    assert unchecked()


def gated_cluster(holds: dict[str, int]) -> MemoryNet:
    """Three runtimes whose peers announce ``holds`` (node id -> ms; absent: NEED)."""
    net = MemoryNet()
    for i, nid in enumerate(sorted(M3.voters)):
        core = RaftNode(nid, rng=random.Random(100 + i), config=LEASE, initial=bootstrap_state(M3))

        def announced(me: str = nid) -> dict[str, tuple[str | None, int]]:
            return {n: (None, holds.get(n, NEED)) for n in M3.voters if n != me}

        net.runtimes[nid] = RaftRuntime(
            core=core,
            sm=ClusterStateMachine(),
            storage=MemoryStore(),
            transport=net,
            tick_seconds=TICK,
            write_in_thread=False,
            lease_holds=announced,
        )
    return net


@pytest.mark.parametrize(("short", "by_lease"), [(False, True), (True, False)])
async def test_a_short_hold_makes_a_lease_read_a_readindex_read(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, short: bool, by_lease: bool
) -> None:
    holds: dict[str, int] = {}
    net = gated_cluster(holds)
    await start_all(nursery, net)
    await wait_until(lambda: (lead := leader_of(net)) is not None and lead.status().lease, "lease")
    leader = leader_of(net)
    assert leader is not None
    if short:  # one follower restarted with leases off, say: its next hello says hold 0
        holds[next(n for n in sorted(M3.voters) if n != leader.node_id)] = 0
    # The followers are cut off: only the lease can confirm a read now.
    net.cut |= {n for n in net.runtimes if n != leader.node_id}
    served = None
    with trio.move_on_after(TICK / 2):
        served = await leader.read_index(lease=True)
    assert (served is not None) is by_lease
