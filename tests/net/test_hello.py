"""The hello frame: round trip, and clear refusals of anything else."""

from __future__ import annotations

import attrs
import cbor2
import pytest

from univrs.errors import ProtocolError
from univrs.net.address import join_host_port, split_host_port
from univrs.net.hello import WIRE_VERSION, Hello, decode_hello, encode_hello
from univrs.raft.starts import CHAIN, Start


def test_round_trip() -> None:
    h = Hello(version=WIRE_VERSION, cluster="c1", src="n1", dst="n2")
    assert decode_hello(encode_hello(h)) == h
    assert h.incarnation is None and h.expect is None


def test_incarnations_ride_in_optional_fields_older_nodes_ignore() -> None:
    h = Hello(
        version=WIRE_VERSION,
        cluster="c1",
        src="n1",
        dst="n2",
        incarnation="0123456789abcdef",
        expect="fedcba9876543210",
    )
    assert decode_hello(encode_hello(h)) == h
    doc = cbor2.loads(encode_hello(h))
    # The fields an older node reads are there, unchanged; the new ones are extra keys.
    assert {k: doc[k] for k in ("hello", "version", "cluster", "src", "dst")} == {
        "hello": "univrs-raft",
        "version": WIRE_VERSION,
        "cluster": "c1",
        "src": "n1",
        "dst": "n2",
    }
    assert doc["incarnation"] == "0123456789abcdef" and doc["expect"] == "fedcba9876543210"
    # A hello from an older node (no incarnation) decodes with neither.
    old = {"hello": "univrs-raft", "version": WIRE_VERSION, "cluster": "c", "src": "a", "dst": "b"}
    assert decode_hello(cbor2.dumps(old)) == Hello(
        version=WIRE_VERSION, cluster="c", src="a", dst="b"
    )


@pytest.mark.parametrize(
    # The last three failed on the old code: control characters reached the logs, the close
    # reasons and (recorded by the leader) the configuration.
    "bad",
    ["", 7, "x" * 65, ["a"], "a\nWARNING forged line", "x\x1b[2J", "caf\u00e9"],
)
def test_a_malformed_incarnation_is_refused(bad: object) -> None:
    doc = {"hello": "univrs-raft", "version": 1, "cluster": "c", "src": "a", "dst": "b"}
    with pytest.raises(ProtocolError, match="'incarnation'"):
        decode_hello(cbor2.dumps({**doc, "incarnation": bad}))
    with pytest.raises(ProtocolError, match="'expect'"):
        decode_hello(cbor2.dumps({**doc, "expect": bad}))


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("text", "text frame"),
        (b"\xff\x00garbage", "malformed hello"),
        (cbor2.dumps([1, 2]), "not a univrs raft hello"),
        (cbor2.dumps({"hello": "other"}), "not a univrs raft hello"),
        (cbor2.dumps({"hello": "univrs-raft", "version": "1"}), "integer version"),
        (
            cbor2.dumps({"hello": "univrs-raft", "version": 1, "cluster": "c", "src": ""}),
            "'src'",
        ),
        (b"\x00" * 5000, "exceeds"),
    ],
)
def test_refusals(frame: bytes | str, expected: str) -> None:
    with pytest.raises(ProtocolError, match=expected):
        decode_hello(frame)


@pytest.mark.parametrize(
    ("addr", "parts"),
    [("127.0.0.1:7000", ("127.0.0.1", 7000)), ("[::1]:80", ("::1", 80)), ("h:1", ("h", 1))],
)
def test_addresses_round_trip(addr: str, parts: tuple[str, int]) -> None:
    assert split_host_port(addr) == parts
    assert join_host_port(*parts) == addr


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("localhost", "no port"),
        (":7000", "empty or malformed host"),
        ("h:x", "non-numeric port"),
        ("h:0", "outside 1-65535"),
        ("h:65536", "outside 1-65535"),
        ("::1:7000", "brackets"),
        ("[::1]7000", "IPv6"),
    ],
)
def test_bad_addresses(addr: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        split_host_port(addr)


def test_port_zero_only_when_allowed() -> None:
    assert split_host_port("127.0.0.1:0", allow_port_zero=True) == ("127.0.0.1", 0)


def test_advertised_address_round_trips_and_is_optional() -> None:
    h = Hello(version=WIRE_VERSION, cluster="c1", src="n1", dst="n2", addr="127.0.0.1:7001")
    assert decode_hello(encode_hello(h)) == h
    # A hello without it (every older version's) still decodes, and encodes to the same bytes.
    old = {
        "hello": "univrs-raft",
        "version": WIRE_VERSION,
        "cluster": "c1",
        "src": "n1",
        "dst": "n2",
    }
    assert decode_hello(cbor2.dumps(old)).addr is None
    assert encode_hello(attrs.evolve(h, addr=None)) == cbor2.dumps(old)
    # Unknown keys are ignored: a newer version's optional fields do not break this one.
    assert decode_hello(cbor2.dumps({**old, "addr": "h:1", "later": [1]})).addr == "h:1"


@pytest.mark.parametrize("addr", ["", "nohost", "h:0", 7, ["h:1"]])
def test_a_malformed_advertised_address_is_refused(addr: object) -> None:
    doc = {"hello": "univrs-raft", "version": 1, "cluster": "c", "src": "a", "dst": "b"}
    with pytest.raises(ProtocolError, match="'addr'"):
        decode_hello(cbor2.dumps({**doc, "addr": addr}))


def test_the_payload_version_rides_in_an_optional_field() -> None:
    """A node announces the newest entry payload version it applies (the gate on batch
    entries, univrs/runtime/capabilities.py); an older node's hello, without the key, counts
    as version 1. Fails on the old code: the hello had no such field."""
    h = Hello(version=WIRE_VERSION, cluster="c1", src="n1", dst="n2", payload=2)
    assert cbor2.loads(encode_hello(h))["payload"] == 2
    assert decode_hello(encode_hello(h)) == h
    one = Hello(version=WIRE_VERSION, cluster="c1", src="n1", dst="n2")
    assert "payload" not in cbor2.loads(encode_hello(one)) and one.payload == 1


@pytest.mark.parametrize("bad", [0, -1, 2**16, True, "2", 2.0, [2], None])
def test_a_malformed_payload_version_is_refused(bad: object) -> None:
    """A hostile or broken dialer gets its connection refused (ProtocolError), never a
    gate opened by a value that is not a version."""
    doc = {"hello": "univrs-raft", "version": 1, "cluster": "c", "src": "a", "dst": "b"}
    with pytest.raises(ProtocolError, match="'payload'"):
        decode_hello(cbor2.dumps({**doc, "payload": bad}))


def test_the_start_and_seen_ride_in_optional_fields() -> None:
    start = Start(counter=40, boots=tuple(f"{i:016x}" for i in range(CHAIN)))
    h = Hello(
        version=WIRE_VERSION,
        cluster="c1",
        src="n1",
        dst="n2",
        start=start,
        seen=("fedcba9876543210", 3, "ab" * 8),
    )
    frame = encode_hello(h)
    assert decode_hello(frame) == h
    assert len(frame) < 1024  # far below the 4 KiB any version reads
    doc = cbor2.loads(frame)
    assert doc["start"] == [40, list(start.boots)] and doc["seen"] == [
        "fedcba9876543210",
        3,
        "ab" * 8,
    ]
    plain = Hello(version=WIRE_VERSION, cluster="c1", src="n1", dst="n2")
    assert "start" not in cbor2.loads(encode_hello(plain))  # none: as an older build


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("start", [0, ["ab" * 8]]),
        ("start", [2, ["ab" * 8] * 3]),  # more boot ids than starts
        ("start", [1, ["not hex at all!!"]]),
        ("start", [1, "ab" * 8]),
        ("start", 5),
        ("seen", ["inc", 0, "ab" * 8]),
        ("seen", ["inc", 1, "zz"]),
        ("seen", ["bad inc!", 1, "ab" * 8]),
        ("seen", [1, 2, 3]),
    ],
)
def test_a_malformed_start_or_seen_is_refused(key: str, bad: object) -> None:
    doc = {"hello": "univrs-raft", "version": WIRE_VERSION, "cluster": "c", "src": "a", "dst": "b"}
    doc[key] = bad
    with pytest.raises(ProtocolError, match=f"hello field '{key}'"):
        decode_hello(cbor2.dumps(doc))
