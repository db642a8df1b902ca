"""``encode_payload_doc`` checks a proposal's document with its two outer arrays in place
(univrs/runtime/payload.py), and (session 31) writes those arrays' heads and the time's itself:
the same bytes (``cbor2.dumps`` of the whole document) and the same "round-trips exactly"
answer as the whole-document check it replaced, which is kept here as the reference, for
versions 1 and 3 (an owner) and times of every CBOR head."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from univrs import codec
from univrs.runtime import payload
from univrs.runtime.payload import EXACT_DEPTH, _single_doc, encode_payload_doc, round_trips_exactly
from univrs.sm import DeleteWorkload, Envelope, ScaleWorkload


def _reference(envelope: Envelope, time_ms: Any) -> tuple[bytes, list[Any] | None] | str:
    doc = _single_doc(envelope, time_ms)
    try:
        if round_trips_exactly(doc, EXACT_DEPTH):
            return cbor2.dumps(doc), doc
        return codec.encode_plain(doc), None
    except (TypeError, ValueError) as exc:  # ValueError: a string UTF-8 cannot encode
        return f"{type(exc).__name__}: {exc}"


def _ours(envelope: Envelope, time_ms: Any) -> tuple[bytes, list[Any] | None] | str:
    try:
        return encode_payload_doc(envelope, time_ms)
    except (TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


ints = st.one_of(
    st.integers(-(1 << 66), 1 << 66),
    st.sampled_from([-(1 << 64) - 1, -(1 << 64), (1 << 64) - 1, 1 << 64, 0, -1]),
)
# CBOR's integer heads change at 24, 2**8, 2**16, 2**32 (a leader's time: 8 bytes) and 2**64
BOUNDS = [
    n + d for b in (24, 1 << 8, 1 << 16, 1 << 32, 1 << 64) for n in (b, -b) for d in (-1, 0, 1)
]
times = st.one_of(
    ints,
    st.sampled_from([*BOUNDS, 1_765_000_000_000]),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.binary(max_size=3),
)


@settings(max_examples=600)
@given(
    st.text(min_size=1, max_size=8),
    ints,
    st.one_of(st.none(), ints),
    times,
    st.one_of(st.none(), st.tuples(st.text(min_size=1, max_size=8), ints)),
    st.one_of(st.none(), st.text(min_size=1, max_size=8)),
)
def test_the_same_bytes_and_document_as_the_whole_document_check(
    ident: str,
    replicas: int,
    expected: int | None,
    time_ms: Any,
    key: tuple[str, int] | None,
    owner: str | None,
) -> None:
    envelope = Envelope(
        command=ScaleWorkload(id=ident, replicas=replicas, expected_version=expected),
        client_id=None if key is None else key[0],
        seq=None if key is None else key[1],
        owner=owner if key is not None else None,
    )
    assert _ours(envelope, time_ms) == _reference(envelope, time_ms)


def _nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        doc = {"in": doc}
    return doc


@pytest.mark.parametrize("owner", [None, "token:t1"])
@pytest.mark.parametrize("depth", range(EXACT_DEPTH - 4, EXACT_DEPTH + 2))
def test_the_depth_bound_is_the_whole_documents(
    monkeypatch: pytest.MonkeyPatch, depth: int, owner: str | None
) -> None:
    """An envelope document nested up to the bound: exact on both sides exactly when the whole
    document (two or three arrays more) is within ``EXACT_DEPTH`` (fails if the in-place check
    starts one level off)."""
    monkeypatch.setattr(payload, "envelope_to_plain", lambda envelope: _nested(depth))
    envelope = Envelope(  # not a scale: its document is built in place, not patched
        command=DeleteWorkload(id="w"),
        client_id="c" if owner else None,
        seq=1 if owner else None,
        owner=owner,
    )
    ours, reference = _ours(envelope, 5), _reference(envelope, 5)
    assert ours == reference
    assert isinstance(ours, tuple)
    assert (ours[1] is None) == (depth > EXACT_DEPTH - (2 if owner else 1))


@pytest.mark.parametrize("owner", [None, "token:t1"])
@pytest.mark.parametrize("time_ms", [*BOUNDS, 1_765_000_000_000, True, None, "t", b"t"])
def test_the_bytes_of_every_time_head(time_ms: Any, owner: str | None) -> None:
    """Each head a time may take, around every bound, with and without an owner: the bytes
    ``cbor2.dumps`` writes for the whole document."""
    envelope = Envelope(
        command=ScaleWorkload(id="bench-7", replicas=3, expected_version=9),
        client_id="c-1",
        seq=12,
        owner=owner,
    )
    ours = _ours(envelope, time_ms)
    assert ours == _reference(envelope, time_ms)
    if isinstance(ours, tuple) and ours[1] is not None:
        assert ours[0] == cbor2.dumps(ours[1]) == codec.encode_plain(_single_doc(envelope, time_ms))


class _Text(str):
    """A str subclass: not exact, so never the scale's own path."""


def _odd(base: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        base,
        base,
        st.none(),
        st.booleans(),
        st.floats(allow_nan=False),
        st.binary(max_size=2),
        st.builds(_Text, st.text(max_size=2)),
        st.sampled_from([[], {}, (1,)]),
        ints,
    )


FIELDS = ["id", "replicas", "expected_version", "client_id", "seq", "owner"]


# Strings around CBOR's text heads (24 and 256 bytes), of several bytes a character, and one
# UTF-8 cannot encode (the general path's error); integers around every integer head.
texts = st.one_of(
    st.text(max_size=4),
    st.text(min_size=20, max_size=300),
    st.sampled_from(
        [c * n for c in ("x", "é", "😀") for n in (5, 6, 8, 12, 23, 24, 25, 64, 85, 255, 256, 257)]
    ),
    st.just("bad \ud800"),
)
scale_ints = st.one_of(ints, st.sampled_from(BOUNDS), st.integers(0, 1 << 33))


@st.composite
def scales(draw: Any) -> Envelope:
    """A scale envelope of exact fields, then none, one or two of them of any other type."""
    fields: dict[str, Any] = {
        "id": draw(texts),
        "replicas": draw(scale_ints),
        "expected_version": draw(st.one_of(st.none(), scale_ints)),
        "client_id": draw(st.one_of(st.none(), texts)),
        "seq": draw(st.one_of(st.none(), scale_ints)),
        "owner": draw(st.one_of(st.none(), texts)),
    }
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=2)):
        fields[name] = draw(_odd(st.none()))
    command = ScaleWorkload(
        id=fields["id"], replicas=fields["replicas"], expected_version=fields["expected_version"]
    )
    return Envelope(
        command=command, client_id=fields["client_id"], seq=fields["seq"], owner=fields["owner"]
    )


@settings(max_examples=2500)
@given(scales(), st.sampled_from([1_765_000_000_000, 5, None, -1, "\udc00"]))
def test_a_scale_of_any_field_types_encodes_as_the_general_path(
    envelope: Envelope, time_ms: Any
) -> None:
    """Session 31: a scale's plain document is built, checked and encoded in one step
    (``payload._exact_scale``); for fields of every type, exact or not, the same bytes,
    document (or None) and refusals (the first of them: a time UTF-8 cannot encode before
    an id) as ``envelope_to_plain``, the whole-document check and ``cbor2.dumps``."""
    ours, reference = _ours(envelope, time_ms), _reference(envelope, time_ms)
    assert ours == reference
    if isinstance(ours, tuple) and ours[1] is not None:
        assert isinstance(reference, tuple) and reference[1] is not None
        assert _types(ours[1]) == _types(reference[1])


def _types(doc: Any) -> Any:
    """The document with each value's type beside it (``==`` takes True for 1)."""
    if isinstance(doc, dict):
        return [(key, _types(value)) for key, value in doc.items()]
    if isinstance(doc, list):
        return [_types(item) for item in doc]
    return (type(doc), doc)
