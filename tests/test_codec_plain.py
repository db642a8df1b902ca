"""Plain data in the codec (univrs/codec/plain.py): round trips, refusals, and the fast checks
held to a plain reference of the rule they implement."""

from __future__ import annotations

import datetime
import enum
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.strategies import plain
from univrs.codec import DEFAULT_MAX_DEPTH, decode_plain, encode_plain
from univrs.codec import plain as plain_codec
from univrs.errors import ProtocolError

MAX = 1 << 22


def refused(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_plain(data, max_size=MAX)


@given(plain)
def test_plain_data_round_trips(obj: object) -> None:
    assert decode_plain(encode_plain(obj), max_size=MAX) == obj


def test_plain_tuples_become_lists() -> None:
    assert decode_plain(encode_plain({"a": (1, (2,))}), max_size=100) == {"a": [1, [2]]}


@pytest.mark.parametrize(
    "obj",
    [{1, 2}, frozenset(), datetime.datetime.now(datetime.UTC), 1 << 64, -(1 << 64) - 1, object()],
    ids=["set", "frozenset", "datetime", "bigint", "bignegint", "object"],
)
def test_encode_plain_refuses_what_decode_would_refuse(obj: object) -> None:
    with pytest.raises(TypeError):
        encode_plain([obj])


def test_encode_plain_refuses_odd_keys_and_deep_nesting() -> None:
    with pytest.raises(TypeError):
        encode_plain({(1, 2): 3})
    with pytest.raises(TypeError):
        encode_plain({True: 3})
    deep: list[object] = []
    for _ in range(DEFAULT_MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(TypeError):
        encode_plain(deep)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("9f01ff", "indefinite"),
        ("5f4101ff", "indefinite"),
        ("a2616101616102", "[Dd]uplicate"),
        ("62c328", "malformed"),  # invalid UTF-8
        ("f7", "UndefinedType"),
        ("f0", "CBORSimpleValue"),  # simple value 16
        ("a1810102", "map key"),  # array as a map key
        ("a1f501", "map key"),  # bool as a map key
        ("ff", "malformed"),  # a lone break
    ],
)
def test_plain_refusals(raw: str, match: str) -> None:
    refused(bytes.fromhex(raw), match)


def test_plain_accepts_floats_and_int_keys() -> None:
    assert decode_plain(bytes.fromhex("a101f93c00"), max_size=100) == {1: 1.0}


# ---------------------------------------------------------------- encode_plain's fast check


def _plain_out_reference(obj: Any, depth: int) -> None:
    """What encode_plain accepts, stated plainly (the checker before its exact-type fast path)."""
    if obj is None or isinstance(obj, bool | float | str | bytes):
        return
    if isinstance(obj, int):
        if not -(1 << 64) <= obj <= (1 << 64) - 1:
            raise TypeError("range")
        return
    if depth <= 0:
        raise TypeError("depth")
    if isinstance(obj, list | tuple):
        for item in obj:
            _plain_out_reference(item, depth - 1)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, bool) or not isinstance(key, int | str | bytes):
                raise TypeError("key")
            _plain_out_reference(key, depth - 1)
            _plain_out_reference(value, depth - 1)
    else:
        raise TypeError("type")


class _Colour(enum.StrEnum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 3


class _Dict(dict[Any, Any]):
    pass


_odd_scalars = st.sampled_from(
    [_Colour.RED, _Level.HIGH, True, 1 << 64, -(1 << 64) - 1, (1 << 64) - 1, {1}, object(), 1.5]
)
_keys = st.one_of(st.text(max_size=3), st.integers(-5, 5), st.binary(max_size=2), _odd_scalars)
_plainish = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3), _odd_scalars),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(_keys.filter(lambda k: k.__hash__ is not None), inner, max_size=4),
        st.dictionaries(st.text(max_size=3), inner, max_size=3).map(_Dict),
    ),
    max_leaves=20,
)


@given(_plainish, st.integers(0, 4))
@example(1 << 64, 1)
@example([1, -(1 << 64) - 1], 2)
@example({"a": {True: 1}}, 3)
@example({"a": [1]}, 1)
@example([[]], 1)
@example([_Colour.RED, _Level.HIGH], 1)
@example(_Dict(a={1}), 2)
@settings(max_examples=300)
def test_the_fast_plain_check_decides_like_the_reference(obj: Any, depth: int) -> None:
    def verdict(check: Any) -> bool:
        try:
            check(obj, depth)
        except TypeError:
            return False
        return True

    assert verdict(plain_codec._check_plain_out) == verdict(_plain_out_reference)


def _plain_in_reference(obj: Any, depth: int) -> None:
    """What decode_plain accepts after decoding (the check before its in-place scalar path)."""
    t = type(obj)
    if t in (type(None), bool, int, float, str, bytes):
        return
    if depth <= 0:
        raise ProtocolError("depth")
    if t is list:
        for item in obj:
            _plain_in_reference(item, depth - 1)
    elif t is dict:
        for key, value in obj.items():
            if type(key) not in (int, str, bytes):
                raise ProtocolError("key")
            _plain_in_reference(value, depth - 1)
    else:
        raise ProtocolError("type")


@given(_plainish, st.integers(0, 4))
@example([[]], 1)
@example({"a": {"b": 1}}, 1)
@example({True: 1}, 2)
@example([_Colour.RED], 2)
@settings(max_examples=300)
def test_the_decoded_plain_check_decides_like_the_reference(obj: Any, depth: int) -> None:
    def verdict(check: Any) -> bool:
        try:
            check(obj, depth)
        except ProtocolError:
            return False
        return True

    assert verdict(plain_codec._check_plain_in) == verdict(_plain_in_reference)
