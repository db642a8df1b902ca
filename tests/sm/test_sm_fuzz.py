"""Decoders never crash: any plain data decodes or raises DecodeError, nothing else."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sm.helpers import spec
from tests.sm.test_sm_plain import SAMPLES
from tests.sm.test_sm_snapshot import V1_SNAPSHOT
from univrs.sm import (
    ClusterStateMachine,
    Created,
    CreateWorkload,
    DecodeError,
    Envelope,
    Failure,
    Success,
    envelope_from_plain,
    envelope_to_plain,
    response_from_plain,
    restore_plain,
)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=4),
    st.sampled_from(["create-workload", "ready", "running", "tcp", "success", "failure", "v"]),
)
plain = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a plain document."""
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for n, value in enumerate(doc):
            found += paths(value, (*prefix, n))
    return found


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def decodes_or_refuses(decode: Any, doc: Any, result_type: Any) -> None:
    """Decoding returns a value of the right type or raises DecodeError; anything else (a
    KeyError, TypeError, AttributeError ...) fails the test."""
    try:
        result = decode(doc)
    except DecodeError as e:
        assert str(e)  # says what is wrong
    else:
        assert isinstance(result, result_type)


@settings(max_examples=300, deadline=None)
@given(plain)
def test_arbitrary_plain_data(doc: Any) -> None:
    decodes_or_refuses(envelope_from_plain, doc, Envelope)
    decodes_or_refuses(response_from_plain, doc, Success | Created | Failure)
    decodes_or_refuses(restore_plain, doc, ClusterStateMachine)
    decodes_or_refuses(envelope_from_plain, {"v": 1, "command": doc}, Envelope)


# Bare, and in the pinned snapshot's open session "c5" (whose next seq is 3).
ENVELOPES = [envelope_to_plain(Envelope(command=c)) for c in SAMPLES]
ENVELOPES += [envelope_to_plain(Envelope(command=c, client_id="c5", seq=3)) for c in SAMPLES]
ENVELOPES.append(envelope_to_plain(Envelope(command=CreateWorkload(id="w", spec=spec("web")))))


@settings(max_examples=300, deadline=None)
@given(st.data(), plain)
def test_valid_envelopes_with_one_value_replaced_decode_and_apply(data: Any, value: Any) -> None:
    """Whatever decodes is applied to a populated state: a response, never an exception, and
    the state stays sound (``apply`` is total)."""
    doc = data.draw(st.sampled_from(ENVELOPES))
    path = data.draw(st.sampled_from(paths(doc)))
    mutated = replaced(doc, path, value)
    decodes_or_refuses(envelope_from_plain, mutated, Envelope)
    try:
        envelope = envelope_from_plain(mutated)
    except DecodeError:
        return
    sm = restore_plain(copy.deepcopy(V1_SNAPSHOT))
    response = sm.apply(envelope, index=sm.last_applied_index + 1, term=1, time_ms=2000)
    assert isinstance(response, Success | Created | Failure)
    assert sm.problems() == []


@settings(max_examples=300, deadline=None)
@given(st.data(), plain)
def test_the_pinned_snapshot_with_one_value_replaced(data: Any, value: Any) -> None:
    path = data.draw(st.sampled_from(paths(V1_SNAPSHOT)))
    decodes_or_refuses(restore_plain, replaced(V1_SNAPSHOT, path, value), ClusterStateMachine)
