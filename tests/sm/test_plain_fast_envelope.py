"""The apply path's fast envelope read (univrs/sm/plain.py ``_envelope_fast``, round 17) decides
exactly as the general path: the same envelope for what it accepts, and for anything else
the general path's answer (the same envelope or the same refusal, message and all)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sm.strategies import commands
from univrs.sm import Envelope
from univrs.sm import plain as plain_module
from univrs.sm.errors import DecodeError
from univrs.sm.plain import envelope_from_plain, envelope_to_plain

# Values a field may be swapped for: wrong types, bools for ints, None, containers.
odd_values: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 7, 2**40, "", "x", "w0", b"b", 1.5]),
    st.builds(list),  # a new one each time: the mutations below may change a map drawn here
    st.builds(dict),
)
keys = st.sampled_from(
    ["v", "command", "client_id", "seq", "owner", "type", "id", "replicas", "expected_version"]
)


@st.composite
def envelope_docs(draw: st.DrawFn) -> Any:
    command = draw(commands)
    envelope = Envelope(
        command=command,
        client_id=draw(st.sampled_from([None, "c1", "c2"])),
        seq=draw(st.sampled_from([None, 1, 5])),
        owner=draw(st.sampled_from([None, "token:a"])),
    )
    doc = envelope_to_plain(envelope)
    for _ in range(draw(st.integers(0, 3))):  # a few mutations, at either level
        target = doc if draw(st.booleans()) else doc.get("command")
        if not isinstance(target, dict):
            break
        action = draw(st.sampled_from(["drop", "set", "add"]))
        key = draw(st.sampled_from(sorted(target))) if action != "add" and target else draw(keys)
        if action == "drop":
            target.pop(key, None)
        else:
            target[key] = draw(odd_values)
    return doc


def _general(doc: Any, owners: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patched:
        patched.setattr(plain_module, "_envelope_fast", lambda _value, _owners: None)
        return _outcome(doc, owners)


def _outcome(doc: Any, owners: bool) -> Any:
    try:
        return envelope_from_plain(doc, owners=owners)
    except (DecodeError, ValueError, TypeError, KeyError) as exc:
        return (type(exc), str(exc))


@settings(max_examples=600)
@given(envelope_docs(), st.booleans())
def test_the_fast_read_decides_as_the_general_path(doc: Any, owners: bool) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert _outcome(doc, owners) == _general(doc, owners, monkeypatch)


def test_the_fast_read_takes_the_common_commands() -> None:
    """Not a fallback for every envelope: a keyed scale is read by the fast path itself."""
    doc = {
        "v": 1,
        "command": {"type": "scale-workload", "id": "w", "replicas": 3},
        "client_id": "c",
        "seq": 4,
    }
    read = plain_module._envelope_fast(doc, False)
    assert read is not None and read == envelope_from_plain(doc)
    assert plain_module._envelope_fast({**doc, "seq": True}, False) is None
    assert plain_module._envelope_fast({**doc, "owner": "o"}, False) is None
    assert plain_module._envelope_fast({**doc, "owner": "o"}, True) is not None
    bad_command = {**doc, "command": {"type": "scale-workload", "id": "w", "replicas": "3"}}
    assert plain_module._envelope_fast(bad_command, False) is None
    with pytest.raises(DecodeError, match=r"envelope\.command\.replicas"):
        envelope_from_plain(bad_command)
