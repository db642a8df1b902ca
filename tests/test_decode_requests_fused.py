"""The fast protocol's request frames decoded in one pass (``decode_requests``, s18-ingress)
against the two-pass form (``decode_requests_general``: ``codec.decode_plain``, then the
requests): the same frames refused with ``ProtocolError``, the same requests and bad requests
out of every other, for generated frames (well-formed, malformed fields, values that are not
plain data at every place a request has, nesting at the depth bound) and for mutated bytes."""

from __future__ import annotations

import random
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import UINT64, plain
from univrs.client import protocol
from univrs.client.protocol import BadRequest, Request, decode_requests, decode_requests_general
from univrs.errors import ProtocolError


def _outcome(decode: Any, data: bytes) -> Any:
    try:
        out = decode(data, max_size=protocol.MAX_FRAME)
    except ProtocolError:
        return "refused"
    return [_key(r) for r in out]


def _key(r: Request | BadRequest) -> Any:
    if type(r) is BadRequest:
        return ("bad", r.id, type(r.error).__name__, str(r.error), r.error.field)
    assert type(r) is Request
    return ("ok", r.to_plain(), r.key, r.hops)


def _same(data: bytes) -> None:
    assert _outcome(decode_requests, data) == _outcome(decode_requests_general, data)


# Values that are not plain data, as cbor2 decodes them: a simple value, ``undefined``, and
# (as map keys) an array or a map (a tuple, a FrozenDict), a float, a bool or null.
not_plain = st.sampled_from([cbor2.CBORSimpleValue(99), cbor2.undefined])
bad_keys = st.sampled_from([(1, 2), 1.5, True, None, ()])


def _nest(depth: int, leaf: Any) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


values = (
    plain
    | not_plain
    | st.builds(_nest, st.integers(0, 34), plain | not_plain)
    | st.dictionaries(bad_keys, plain, min_size=1, max_size=2)
)
fields = st.sampled_from(
    ["id", "op", "args", "key", "consistency", "timeout_ms", "hops", "token", "client", "other"]
)


@st.composite
def requests(draw: st.DrawFn) -> Any:
    req: dict[Any, Any] = {
        "id": draw(st.integers(0, UINT64)),
        "op": draw(st.sampled_from(["workload.scale", "workload.get", "credits.mint"])),
        "args": draw(st.dictionaries(st.text(max_size=4), plain, max_size=3)),
    }
    if draw(st.booleans()):
        req["key"] = [draw(st.text(max_size=8)), draw(st.integers(0, UINT64))]
    if draw(st.booleans()):
        req["consistency"] = draw(st.sampled_from(protocol.CONSISTENCIES))
    if draw(st.booleans()):
        req["timeout_ms"] = draw(st.integers(0, 10**6))
    if draw(st.booleans()):
        req["hops"] = draw(st.integers(0, 2))
    if draw(st.booleans()):
        req["token"] = draw(st.text(min_size=1, max_size=8))
    if draw(st.booleans()):
        req["client"] = draw(st.text(max_size=8))
    # Then break it: a field replaced by anything (plain or not, nested deep), an arg that is
    # not plain, a key of another type, the request itself not a map.
    for _ in range(draw(st.integers(0, 2))):
        how = draw(st.integers(0, 4))
        if how == 0:
            req[draw(fields)] = draw(values)
        elif how == 1:
            if type(req.get("args")) is dict:
                req["args"][draw(st.text(max_size=3))] = draw(values)
        elif how == 2:
            req[draw(bad_keys | st.integers() | st.binary(max_size=3))] = draw(plain)
        elif how == 3:
            req.pop(draw(fields), None)
        else:
            return draw(values)
    return req


def _encode(doc: Any) -> bytes:
    return cbor2.dumps(doc)


@settings(max_examples=400, deadline=None)
@given(st.lists(requests(), max_size=5))
def test_generated_frames_decode_alike(frame: list[Any]) -> None:
    _same(_encode(frame))


@settings(max_examples=100, deadline=None)
@given(values)
def test_a_frame_that_is_not_an_array_is_refused_alike(doc: Any) -> None:
    _same(_encode(doc))


def test_well_formed_requests_decode_alike() -> None:
    frame = [
        {
            "id": i,
            "op": "workload.scale",
            "args": {"id": f"w{i}", "replicas": i, "spec": {"labels": {"a": [1, 2.5, None]}}},
            "key": ["c1", i + 1],
            "timeout_ms": 3000,
        }
        for i in range(20)
    ]
    data = _encode(frame)
    assert _outcome(decode_requests, data) == _outcome(decode_requests_general, data)
    assert all(type(r) is Request for r in decode_requests(data))


@pytest.mark.parametrize(
    "where",
    [
        lambda bad: [{"id": 1, "op": "x", "args": {"a": bad}}],
        lambda bad: [{"id": 1, "op": "x", "args": {"a": [1, {"b": bad}]}}],
        lambda bad: [{"id": 1, "op": "x", "args": {}, "key": ["c", bad]}],
        lambda bad: [{"id": 1, "op": "x", "args": {}, "other": [bad]}],  # a bad request too
        lambda bad: [{"id": 1, "op": 5, "args": {}, "token": bad}],
        lambda bad: [{"id": 1, "op": "x"}, {"id": 2, "op": "x", "args": {"q": bad}}],
        lambda bad: [{"id": -1, "op": "x", "args": {"q": bad}}],
        lambda bad: [{"id": 1, "op": "x", "args": {}}, bad],
    ],
)
@pytest.mark.parametrize("bad", [cbor2.CBORSimpleValue(99), cbor2.undefined])
def test_a_value_that_is_not_plain_anywhere_refuses_the_frame(where: Any, bad: Any) -> None:
    data = _encode(where(bad))
    with pytest.raises(ProtocolError):
        decode_requests(data)
    with pytest.raises(ProtocolError):
        decode_requests_general(data)


@pytest.mark.parametrize("key", [(1, 2), 1.5, True, None], ids=["array", "float", "bool", "null"])
def test_a_map_key_that_is_not_plain_refuses_the_frame(key: Any) -> None:
    for frame in (
        [{"id": 1, "op": "x", "args": {key: 1}}],
        [{"id": 1, "op": "x", "args": {}, key: 1}],
        [{"id": 1, "op": "x", "args": {"a": {key: 1}}}],
    ):
        with pytest.raises(ProtocolError):
            decode_requests(_encode(frame))


def test_nesting_past_the_bound_is_refused_alike() -> None:
    for depth in range(26, 36):
        data = _encode([{"id": 1, "op": "x", "args": {"a": _nest(depth, 1)}}])
        _same(data)
    deep = _encode([{"id": 1, "op": "x", "args": {"a": _nest(40, 1)}}])
    with pytest.raises(ProtocolError):
        decode_requests(deep)


def test_mutated_bytes_decode_alike() -> None:
    base = _encode(
        [
            {"id": 7, "op": "workload.scale", "args": {"id": "w", "replicas": 3}, "key": ["c", 9]},
            {"id": 8, "op": "workload.get", "args": {"id": "w"}, "consistency": "local"},
        ]
    )
    rng = random.Random("s18-ingress fused decode")
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            data[pos] = rng.randrange(256)
        _same(bytes(data))
