"""``encode_payload_doc`` checks a proposal's document with its two outer arrays in place
(univrs/runtime/payload.py): the same bytes and the same "round-trips exactly" answer as the
whole-document check it replaced, which is kept here as the reference."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from univrs import codec
from univrs.runtime import payload
from univrs.runtime.payload import EXACT_DEPTH, _single_doc, encode_payload_doc, round_trips_exactly
from univrs.sm import Envelope, ScaleWorkload


def _reference(envelope: Envelope, time_ms: Any) -> tuple[bytes, list[Any] | None] | str:
    doc = _single_doc(envelope, time_ms)
    try:
        if round_trips_exactly(doc, EXACT_DEPTH):
            return cbor2.dumps(doc), doc
        return codec.encode_plain(doc), None
    except TypeError:
        return "TypeError"


def _ours(envelope: Envelope, time_ms: Any) -> tuple[bytes, list[Any] | None] | str:
    try:
        return encode_payload_doc(envelope, time_ms)
    except TypeError:
        return "TypeError"


ints = st.one_of(
    st.integers(-(1 << 66), 1 << 66),
    st.sampled_from([-(1 << 64) - 1, -(1 << 64), (1 << 64) - 1, 1 << 64, 0, -1]),
)
times = st.one_of(ints, st.booleans(), st.none(), st.text(max_size=3))


@settings(max_examples=300)
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
    envelope = Envelope(
        command=ScaleWorkload(id="w", replicas=1),
        client_id="c" if owner else None,
        seq=1 if owner else None,
        owner=owner,
    )
    ours, reference = _ours(envelope, 5), _reference(envelope, 5)
    assert ours == reference
    assert isinstance(ours, tuple)
    assert (ours[1] is None) == (depth > EXACT_DEPTH - (2 if owner else 1))
