"""Batch entries in the runtime: the driver packs concurrent proposals into one log entry
(payload version 2, univrs/runtime/packing.py) when told so, every replica applies its
commands at consecutive revisions, and each proposer gets its own command's response."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.runtime.memcluster import create, mint, start_cluster, wait_leader, wait_until
from tests.runtime.test_batching import holding_appends
from univrs import codec
from univrs.errors import OutcomeUnknown, ProposalDropped
from univrs.runtime.events import Call, Propose, ProposeBatch
from univrs.runtime.packing import Packing
from univrs.runtime.payload import (
    EXACT_DEPTH,
    UnsupportedPayloadVersion,
    batch_payload,
    decode_entry,
    decode_own_entry,
    encode_payload,
    encode_payload_doc,
)
from univrs.runtime.waiter import Waiter
from univrs.sm import Envelope, OpenSession, state_digest
from univrs.sm.events import ObjectKind
from univrs.sm.plain import envelope_to_plain
from univrs.sm.responses import Created, Response, Success

IDS = ["a", "b", "c"]


def proposal(envelope: Envelope, time_ms: int = 1_000) -> Propose:
    payload, doc = encode_payload_doc(envelope, time_ms)
    return Propose(payload, Waiter(), 0.0, doc)


async def test_concurrent_writes_go_as_one_batch_entry_and_every_replica_agrees(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Fails without packing: each of the 30 writes is an entry of its own."""
    cluster, leader = await start_cluster(
        nursery, IDS, packing=Packing(enabled=True, max_commands=16)
    )
    await leader.propose(create("first"))
    index_before, revision_before = leader.applied_index, leader.sm.revision
    cluster.hold = holding_appends(leader)
    results: dict[str, Response | BaseException] = {}

    async def propose(name: str, envelope: Envelope) -> None:
        try:
            results[name] = await leader.propose(envelope)
        except Exception as exc:
            results[name] = exc

    nursery.start_soon(propose, "held", create("held"))  # goes alone, then is held
    await wait_until(lambda: leader.statistics().proposals >= 2, "the held one to be appended")
    for i in range(10):
        nursery.start_soon(propose, f"w{i}", create(f"w{i}"))
        nursery.start_soon(propose, f"m{i}", mint("p", i + 1))
        nursery.start_soon(propose, f"s{i}", Envelope(command=OpenSession()))
    await trio.sleep(0.01)
    cluster.hold = None
    for msg in cluster.held:
        cluster.deliver(msg)
    cluster.held.clear()
    await wait_until(lambda: len(results) == 31, "every proposal to apply")
    assert all(isinstance(r, Created | Success) for r in results.values()), results
    versions = sorted(r.version for r in results.values())  # type: ignore[union-attr]
    assert versions == list(range(revision_before + 1, revision_before + 32))
    sessions = {r.id for name, r in results.items() if name.startswith("s")}  # type: ignore[union-attr]
    assert len(sessions) == 10
    # 31 commands in 1 + 2 entries (16 commands each at most), plus nothing else.
    assert leader.applied_index - index_before == 3
    runtimes = [cluster.runtimes[nid] for nid in IDS]
    await wait_until(
        lambda: all(rt.sm.revision == leader.sm.revision for rt in runtimes), "replicas"
    )
    assert len({state_digest(rt.sm) for rt in runtimes}) == 1
    assert leader.sm.balance("p") == sum(range(1, 11))
    # The watch history has each command's events at its own revision, on every node.
    for rt in runtimes:
        events, through = rt.watch_hub.read(frozenset(ObjectKind), revision_before + 1, 1000)
        assert through == leader.sm.revision
        created = {e.id: e.revision for e in events if e.kind is ObjectKind.WORKLOAD}
        for name, r in results.items():
            if name.startswith("w"):
                assert created[name] == r.version  # type: ignore[union-attr]


def test_packing_bounds_commands_and_bytes_and_leaves_odd_proposals_alone() -> None:
    small = [proposal(create(f"w{i}")) for i in range(7)]
    deep: Any = "x"
    for _ in range(EXACT_DEPTH + 2):
        deep = [deep]
    odd = Propose(encode_payload(create("odd"), 1), Waiter(), 0.0, None)  # no exact document
    packed = Packing(enabled=True, max_commands=3).pack([*small[:5], odd, *small[5:]])
    shapes = [len(e.proposals) if isinstance(e, ProposeBatch) else 1 for e in packed]
    assert shapes == [3, 2, 1, 2]
    assert packed[2] is odd
    size = len(small[0].payload)
    by_bytes = Packing(enabled=True, max_bytes=2 * size).pack(small)
    assert [len(e.proposals) if isinstance(e, ProposeBatch) else 1 for e in by_bytes] == [
        2,
        2,
        2,
        1,
    ]
    assert Packing(enabled=False).pack(small) == small  # the default: one entry each
    assert Packing(enabled=True).pack(small[:1]) == small[:1]  # a lone one: version 1
    # The node's bound: a quarter of the Raft frame limit, so a batch entry always fits a frame.
    assert Packing.for_frames(enabled=True, max_payload_size=4 << 20).max_bytes == 256 * 1024
    assert Packing.for_frames(enabled=True, max_payload_size=64 << 10).max_bytes == 16 << 10


def test_a_batch_payload_decodes_to_its_commands_on_every_path() -> None:
    envelopes = [create(f"w{i}") for i in range(30)] + [Envelope(command=OpenSession())]
    proposals = [proposal(e, 1_000 + i) for i, e in enumerate(envelopes)]
    (batch,) = Packing(enabled=True).pack(proposals)
    assert isinstance(batch, ProposeBatch)
    assert codec.decode_plain(batch.payload, max_size=1 << 20) == batch.doc
    assert decode_entry(batch.payload) == (envelopes, 1_030, True)
    assert decode_own_entry(batch.payload, batch.doc) == decode_entry(batch.payload)
    # Version 1 decodes as before, as a one-command entry.
    assert decode_entry(proposals[0].payload) == ([envelopes[0]], 1_000, False)


def test_a_batch_of_proposals_sharing_times_decodes_to_its_commands() -> None:
    # Client frames' proposals share their time (propose_together): the spliced payload cuts
    # each one's own version-1 head, whichever times came before it (round 14).
    envelopes = [create(f"w{i}") for i in range(9)]
    times = [5, 5, 300, 5, 300, 300, 70_000, 5, 70_000]
    proposals = [proposal(e, t) for e, t in zip(envelopes, times, strict=True)]
    (batch,) = Packing(enabled=True).pack(proposals)
    assert isinstance(batch, ProposeBatch)
    assert codec.decode_plain(batch.payload, max_size=1 << 20) == batch.doc
    assert decode_entry(batch.payload) == (envelopes, 70_000, True)


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ([2, 5, []], "no list of commands"),
        ([2, 5, "x"], "no list of commands"),
        ([2, -1, []], "time"),
        ([0, 5, []], "version 1"),
    ],
)
def test_a_bad_batch_payload_fails_whole(doc: Any, why: str) -> None:
    reason = decode_entry(codec.encode_plain(doc))
    assert isinstance(reason, str) and why in reason


def test_a_newer_payload_version_is_not_answered_but_refused_to_apply() -> None:
    """A version this code does not know comes from a newer leader: answering it with an
    error would diverge, so decoding raises (the apply loop stops the node). The old code
    answered [3, ...] with an error; a node limited to version 1 refuses version 2 alike
    (and one limited to 2, version 3: s14-owner)."""
    with pytest.raises(UnsupportedPayloadVersion, match="payload version 4"):
        decode_entry(codec.encode_plain([4, 5, []]))
    with pytest.raises(UnsupportedPayloadVersion, match="payload version 3"):
        decode_entry(codec.encode_plain([3, 5, []]), max_version=2)
    batch = encode_payload_doc(create("w"), 5)[0]
    assert decode_entry(batch, max_version=1) == ([create("w")], 5, False)  # version 1 reads
    _, doc = batch_payload(
        [encode_payload_doc(create(f"w{i}"), 5)[1] for i in range(2)],  # type: ignore[misc]
        [encode_payload_doc(create(f"w{i}"), 5)[0] for i in range(2)],
    )
    with pytest.raises(UnsupportedPayloadVersion, match="up to 1"):
        decode_own_entry(b"", doc, max_version=1)


def test_a_bad_command_in_a_batch_fails_alone() -> None:
    good = envelope_to_plain(create("w"))
    decoded = decode_entry(codec.encode_plain([2, 7, [good, {"type": "no-such-command"}, good, 5]]))
    assert not isinstance(decoded, str)
    commands, time_ms, batched = decoded
    assert (time_ms, batched) == (7, True)
    assert commands[0] == commands[2] == create("w")
    assert isinstance(commands[1], str) and isinstance(commands[3], str)


def test_the_batch_bytes_are_the_version_1_envelopes_spliced() -> None:
    docs_payloads = [encode_payload_doc(create(f"w{i}"), 10**12 + i) for i in range(300)]
    payload, doc = batch_payload([d for _, d in docs_payloads], [p for p, _ in docs_payloads])  # type: ignore[misc]
    assert codec.decode_plain(payload, max_size=1 << 24) == doc  # 300 items: a 2-byte header
    assert doc[1] == 10**12 + 299
    assert codec.encode_plain(doc) == payload


async def _propose_together(
    nursery: trio.Nursery, runtime: Any, names: list[str]
) -> list[Response | BaseException]:
    """Hand the proposals to the driver in one inbox event (``propose_together``): its one
    flush packs them into one batch entry. (Separate ``propose`` calls may reach the driver in
    different steps, depending on trio's scheduling order: then the first goes alone.)"""
    outcome: list[Response | BaseException] = []
    waiters = await runtime.propose_together([create(name) for name in names])

    async def run(waiter: Any) -> None:
        try:
            outcome.append(await waiter.wait())
        except Exception as exc:
            outcome.append(exc)

    for waiter in waiters:
        nursery.start_soon(run, waiter)
    return outcome


async def test_a_replaced_batch_entry_drops_every_proposal_in_it(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """The cut-off leader's batch entry is replaced by the new leader's entry at its index:
    each of its proposers hears ProposalDropped (proven not applied), none applies anywhere."""
    cluster, old = await start_cluster(nursery, IDS, packing=Packing(enabled=True))
    await old.propose(create("w0"))
    last = old.status().last_index
    cluster.cut.add(old.node_id)
    outcome = await _propose_together(nursery, old, ["a1", "a2", "a3"])
    await wait_until(lambda: old.status().last_index == last + 1, "one entry for the three")
    new = await wait_leader(cluster, [i for i in IDS if i != old.node_id])
    await new.propose(create("b"))
    cluster.cut.clear()
    await wait_until(lambda: len(outcome) == 3, "the three proposals to end")
    assert all(isinstance(o, ProposalDropped) for o in outcome), outcome
    await wait_until(lambda: old.sm.get_workload("b") is not None, "the old leader to catch up")
    for rt in cluster.runtimes.values():
        assert all(rt.sm.get_workload(n) is None for n in ("a1", "a2", "a3"))


async def test_a_snapshot_covering_a_batch_entry_makes_every_outcome_unknown(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """The leader is cut off inbound with a batch entry in flight: the others commit it,
    write on and compact past it; the old leader installs their snapshot and cannot tell
    whether its batch applied (it did): each proposer hears OutcomeUnknown."""
    cluster, old = await start_cluster(nursery, IDS, packing=Packing(enabled=True))
    await old.propose(create("w0"))
    last = old.status().last_index
    cluster.deaf.add(old.node_id)
    outcome = await _propose_together(nursery, old, ["a1", "a2", "a3"])
    await wait_until(lambda: old.status().last_index == last + 1, "one entry for the three")
    new = await wait_leader(cluster, [i for i in IDS if i != old.node_id])
    await wait_until(lambda: new.sm.get_workload("a3") is not None, "the batch to apply there")
    for i in range(5):
        await new.propose(create(f"after-{i}"))
    meta = await new.take_snapshot()
    assert meta is not None and new.status().first_index > meta.index
    assert not outcome
    cluster.deaf.clear()
    await wait_until(lambda: len(outcome) == 3, "the three proposals to end")
    assert all(isinstance(o, OutcomeUnknown) for o in outcome), outcome
    await wait_until(lambda: old.applied_index >= meta.index, "the old leader to install it")
    assert old.sm.revision == new.sm.revision  # the revision came with the snapshot
    assert state_digest(old.sm) == state_digest(new.sm)


async def test_propose_together_waits_for_room_in_a_full_inbox(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """``propose_together`` hands its event over without a scheduling round when the inbox
    has room; a full inbox is waited for, not refused (a version that only tried
    ``send_nowait`` raises ``WouldBlock`` here)."""
    _, leader = await start_cluster(nursery, ["a", "b", "c"])
    sender = leader.inbox.sender
    filled = 0
    while True:  # no checkpoint in this loop: the driver cannot drain meanwhile
        try:
            sender.send_nowait(Call(lambda core: None, Waiter()))  # inert events
        except trio.WouldBlock:
            break
        filled += 1
    assert filled > 0
    waiters = await leader.propose_together([create("full-1"), create("full-2")])
    responses = [await w.wait() for w in waiters]
    assert all(isinstance(r, Created) for r in responses), responses
