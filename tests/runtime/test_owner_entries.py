"""s14-owner: payload version 3 carries a keyed command's owner (univrs/runtime/payload.py),
and a leader writes it only while every member applies it (capabilities.py ``OwnerGate``)."""

from __future__ import annotations

import trio

from tests.runtime.memcluster import MemCluster, wait_leader, wait_until
from tests.runtime.test_batch_gate import payload_versions
from univrs import codec
from univrs.runtime.packing import Packing
from univrs.runtime.payload import (
    BATCH_VERSION,
    OWNER_VERSION,
    PAYLOAD_VERSION,
    batch_payload,
    decode_entry,
    decode_own_entry,
    encode_payload,
    encode_payload_doc,
    is_owned,
    without_owner,
)
from univrs.sm import Created, CreateWorkload, Envelope, OpenSession, WorkloadSpec, state_digest
from univrs.sm.plain import envelope_to_plain
from univrs.sm.responses import ErrorCode, Failure

IDS = ["a", "b", "c"]
VICTIM, FORGER = "token:victim", "token:forger"


def keyed(name: str, client: str = "c5", seq: int = 1, owner: str | None = VICTIM) -> Envelope:
    spec = WorkloadSpec(name=name, image="img")
    return Envelope(
        command=CreateWorkload(id=name, spec=spec), client_id=client, seq=seq, owner=owner
    )


def test_an_owned_command_is_a_version_3_entry_and_round_trips() -> None:
    envelope = keyed("w")
    payload, doc = encode_payload_doc(envelope, 7)
    assert doc is not None and doc[0] == OWNER_VERSION
    assert payload == encode_payload(envelope, 7)
    assert decode_entry(payload) == ([envelope], 7, False)  # one command: applied as version 1
    assert decode_own_entry(payload, doc) == ([envelope], 7, False)
    plain, _ = encode_payload_doc(keyed("w", owner=None), 7)
    assert codec.decode_plain(plain, max_size=1 << 20)[0] == PAYLOAD_VERSION  # as before


def test_a_leader_that_may_not_write_owners_drops_them() -> None:
    """What the driver appends while a member predates version 3: the same command and time,
    no owner, version 1 (from the document, or from the bytes when there is none)."""
    payload, doc = encode_payload_doc(keyed("w"), 9)
    assert is_owned(payload) and not is_owned(encode_payload(keyed("w", owner=None), 9))
    expected = encode_payload_doc(keyed("w", owner=None), 9)
    assert without_owner(payload, doc) == expected
    assert without_owner(payload, None) == expected


def test_an_owner_in_an_older_entry_is_refused_alike() -> None:
    """Code before s14-owner refuses an envelope's unknown key ``owner`` (the whole entry in
    version 1, the command in version 2); this code must answer such an entry the same way
    (a hostile or buggy leader could write one), or replicas of both would diverge."""
    owned = envelope_to_plain(keyed("w"))
    reason = decode_entry(codec.encode_plain([PAYLOAD_VERSION, 5, owned]))
    assert isinstance(reason, str) and "owner" in reason
    plain = envelope_to_plain(keyed("v", owner=None))
    decoded = decode_entry(codec.encode_plain([BATCH_VERSION, 5, [plain, owned]]))
    assert not isinstance(decoded, str)
    assert decoded[0][0] == keyed("v", owner=None) and isinstance(decoded[0][1], str)
    bad = decode_entry(codec.encode_plain([OWNER_VERSION, 5, [{"v": 1}]]))
    assert isinstance(bad, str)  # one bad command: the entry fails whole, as in version 1


def test_a_batch_with_an_owned_command_is_version_3() -> None:
    envelopes = [keyed("a", owner=None), keyed("b"), keyed("c", owner=FORGER)]
    made = [encode_payload_doc(e, 10 + i) for i, e in enumerate(envelopes)]
    payload, doc = batch_payload([d for _, d in made], [p for p, _ in made])  # type: ignore[misc]
    assert doc[0] == OWNER_VERSION and doc[1] == 12
    assert codec.decode_plain(payload, max_size=1 << 20) == doc
    assert decode_entry(payload) == (envelopes, 12, True)
    plain = [encode_payload_doc(keyed(n, owner=None), 1) for n in "xy"]
    _, doc = batch_payload([d for _, d in plain], [p for p, _ in plain])  # type: ignore[misc]
    assert doc[0] == BATCH_VERSION  # without owners: the bytes of before


async def test_owners_go_in_the_log_only_while_every_member_applies_them(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """c applies versions up to 2: the leader drops owners (entries of versions 1 and 2, c
    applies them all, every replica agrees; the forger's write is then the API check's to
    refuse, as before). Once c applies 3, owners travel and every replica refuses the forger's
    command at apply. Fails without the gate: c stops on the first version-3 entry."""
    cluster = MemCluster.build(nursery, IDS)
    cluster.packing = Packing(enabled=True)
    cluster.max_payload_versions["c"] = BATCH_VERSION
    await cluster.start_all()
    leader = await wait_leader(cluster, ["a", "b"])
    opened = await leader.propose(Envelope(command=OpenSession(owner=VICTIM)))
    assert isinstance(opened, Created)
    start = leader.status().last_index
    done = await leader.propose(keyed("mine", opened.id, 1))
    assert isinstance(done, Created)
    assert OWNER_VERSION not in payload_versions(cluster, leader.node_id, after=start - 1)

    await cluster.stop("c")
    cluster.max_payload_versions["c"] = OWNER_VERSION
    await cluster.start("c")
    leader = await wait_leader(cluster)
    before = leader.status().last_index
    forged = await leader.propose(keyed("evil", opened.id, 2, FORGER))
    assert isinstance(forged, Failure) and forged.code is ErrorCode.SESSION_EXPIRED
    assert isinstance(await leader.propose(keyed("good", opened.id, 2)), Created)
    assert OWNER_VERSION in payload_versions(cluster, leader.node_id, after=before)
    await wait_until(
        lambda: len({rt.applied_index for rt in cluster.runtimes.values()}) == 1,
        "every replica to apply everything",
    )
    assert not cluster.failures
    assert len({state_digest(rt.sm) for rt in cluster.runtimes.values()}) == 1
    assert all(rt.sm.get_workload("evil") is None for rt in cluster.runtimes.values())
