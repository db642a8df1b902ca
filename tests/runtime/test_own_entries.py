"""The leader reads its own entries from the document it encoded, not from their bytes again
(univrs/runtime/payload.py ``encode_payload_doc`` / ``decode_own_payload``; issue 14).

The rule that makes it safe: the document is used only when it round-trips exactly through
CBOR, and then the same strict checks run on an equal value, so the leader applies what its
followers decode. These tests hold both decoders to the same answers, including for commands
of wrong types (which must be refused alike), and check that a cluster's leader really skips
the decoding while the replicas stay equal.
"""

from __future__ import annotations

import enum
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import univrs.runtime.applier as applier_module
from tests.runtime.memcluster import create, start_cluster, wait_until
from tests.sm.strategies import commands
from univrs import codec
from univrs.runtime.payload import (
    decode_entry,
    decode_own_payload,
    decode_payload,
    encode_payload_doc,
    round_trips_exactly,
)
from univrs.sm.commands import Envelope, ScaleWorkload

IDS = ["a", "b", "c"]
TIME = 1_700_000_000_000

envelopes = st.builds(
    Envelope,
    command=commands,
    client_id=st.one_of(st.none(), st.sampled_from(["c1", "c-0123456789abcdef"])),
    seq=st.one_of(st.none(), st.integers(0, 1 << 40)),
)


@settings(max_examples=300)
@given(envelopes, st.integers(0, 1 << 50))
def test_every_command_is_read_from_its_document_as_its_bytes_decode(
    envelope: Envelope, time_ms: int
) -> None:
    data, doc = encode_payload_doc(envelope, time_ms)
    assert doc is not None  # every command the strategies build takes the fast path
    assert data == codec.encode_plain(doc)  # encoded without its check: the same bytes
    from_bytes = decode_payload(data)
    assert decode_own_payload(data, doc) == from_bytes
    # The strategies also build commands of wrong types ("current" as a version): refused.
    assert from_bytes == (envelope, time_ms) or isinstance(from_bytes, str)


class _Name(enum.StrEnum):
    W = "w"


@pytest.mark.parametrize(
    "command",
    [
        ScaleWorkload(id="w", replicas=True),  # a bool where an int belongs
        ScaleWorkload(id="w", replicas=3.0),  # type: ignore[arg-type]  # a float
        ScaleWorkload(id=_Name.W, replicas=1),  # a str subclass
        ScaleWorkload(id=b"w", replicas=1),  # type: ignore[arg-type]  # bytes for a str
        ScaleWorkload(id="w", replicas=1, expected_version=-1),
    ],
    ids=["bool", "float", "str-enum", "bytes", "negative"],
)
def test_a_command_of_wrong_types_gets_the_answer_its_bytes_get(command: Any) -> None:
    """What a buggy proposer might build: the leader must not apply what followers refuse
    (or the reverse). The float and the enum change type through CBOR, so they take the bytes."""
    data, doc = encode_payload_doc(Envelope(command=command), TIME)
    assert decode_own_payload(data, doc) == decode_payload(data)


@pytest.mark.parametrize(
    ("value", "exact"),
    [
        ({"a": [1, "x", None, True, b"y", {"b": -(1 << 64)}]}, True),
        ([1.0], False),  # floats are left to the bytes
        ((1, 2), False),  # a tuple comes back a list
        ([_Name.W], False),  # a subclass comes back its base type
        ({1: "a"}, False),  # non-str keys are left to the bytes
        ([[[[1]]]], True),
        ([1 << 64], False),  # beyond CBOR's integers: encode_plain refuses it
        ([1, "x", -(1 << 64) - 1], False),
        ({"a": 1 << 64}, False),
        ([[(1 << 64) - 1, -(1 << 64)]], True),
        (1 << 64, False),
    ],
)
def test_only_exact_built_in_types_round_trip(value: object, exact: bool) -> None:
    assert round_trips_exactly(value, 16) is exact


@pytest.mark.parametrize("replicas", [1 << 64, -(1 << 64) - 1])
def test_an_integer_beyond_cbor_is_refused_as_encode_plain_refuses_it(replicas: int) -> None:
    """The fast path skips ``encode_plain``'s check for exact documents: an integer out of
    CBOR's range must not count as exact (cbor2 would encode it as a bignum tag)."""
    with pytest.raises(TypeError):
        encode_payload_doc(Envelope(command=ScaleWorkload(id="w", replicas=replicas)), TIME)


def test_nesting_beyond_the_bound_is_left_to_the_bytes() -> None:
    deep: list[Any] = []
    for _ in range(3):
        deep = [deep]
    assert round_trips_exactly(deep, 4)  # four lists
    assert not round_trips_exactly([deep], 4)


async def test_the_leader_does_not_decode_its_own_entries_and_replicas_agree(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails on the old apply loop: it decoded every entry on every node (3 per write)."""
    decoded: list[bytes] = []
    real = decode_entry

    def counting(data: bytes, *args: Any) -> Any:
        decoded.append(data)
        return real(data, *args)

    monkeypatch.setattr(applier_module, "decode_entry", counting)
    cluster, leader = await start_cluster(nursery, IDS)
    before = len(decoded)
    for i in range(5):
        await leader.propose(create(f"w{i}"))
    index = leader.applied_index  # the apply loop's own (status() may lag a step)
    runtimes = [cluster.runtimes[nid] for nid in IDS]
    await wait_until(
        lambda: all(rt.applied_index >= index for rt in runtimes), "every replica to apply"
    )
    # 5 entries, decoded by the 2 followers only.
    assert len(decoded) - before == 10
    workloads = [rt.sm.list_workloads() for rt in runtimes]
    assert len(workloads[0]) == 5
    assert workloads[1] == workloads[0] and workloads[2] == workloads[0]
