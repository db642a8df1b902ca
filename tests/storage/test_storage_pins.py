"""LogStore keeps a node's pins (``HardState.pins``) with its hard state, across reopens.

A pin holds a member that the configuration binds to no incarnation yet to the first
incarnation the node took a message from (univrs/raft/gate.py ``_maybe_pin``). It used to live
in memory only, so a restarted node took any incarnation under the id again (docs/security.md).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import pytest

from tests.storage.helpers import flip_everywhere, make_entries
from tests.storage.test_storage_named import NAMED
from univrs.errors import StorageError
from univrs.raft.messages import HardState
from univrs.storage import LogStore, layout
from univrs.storage.layout import Corrupt

Opener = Callable[..., LogStore]

PINS = (("n2", "inc-two-xyz"), ("n3", "inc-three"))


def test_pins_survive_a_reopen_with_the_hard_state(open_store: Opener) -> None:
    store = open_store()
    hs = HardState(term=2, vote="n1", commit=1, pins=PINS[:1])
    store.append(hard_state=hs, truncate_from=None, entries=make_entries(1, 3, term=2))
    store.close()
    store = open_store()
    assert store.initial_state().hard_state == hs
    # A later hard state carries every pin (they only grow).
    grown = HardState(term=3, vote=None, commit=2, pins=PINS)
    store.append(hard_state=grown, truncate_from=None, entries=())
    store.close()
    store = open_store()
    assert store.initial_state().hard_state == grown
    assert store.hard_state().pins == PINS


def test_a_store_without_pins_reads_none(open_store: Opener) -> None:
    store = open_store()
    store.append(hard_state=HardState(term=4, vote="n3"), truncate_from=None, entries=())
    store.close()
    assert open_store().initial_state().hard_state == HardState(term=4, vote="n3")


# The hard state's companions with keys of their own: the pins and the ids of folded
# configurations (s13-live, tests/storage/test_storage_named.py); each with a byte of it to
# damage and the record's name in the refusal.
COMPANIONS = [
    pytest.param({"pins": PINS}, b"inc-two-xyz", "pins", id="pins"),
    pytest.param({"named": NAMED}, b"n7-departed", "named", id="named"),
]


@pytest.mark.parametrize(("extra", "needle", "record"), COMPANIONS)
def test_the_hard_state_record_is_unchanged_so_an_older_build_reads_it(
    open_store: Opener, extra: dict[str, Any], needle: bytes, record: str
) -> None:
    # Each has a key of its own: the hard state's record keeps its three items, which a build
    # from before them parses (and forgets them, as it always did).
    store = open_store()
    store.append(
        hard_state=HardState(term=2, vote="n1", commit=0, **extra),
        truncate_from=None,
        entries=(),
    )
    env = store._env  # (the layout under test)
    raw = env.read(lambda txn: txn.get(layout.KEY_HARD_STATE, db=env.meta))
    assert raw is not None
    assert layout.decode_record(layout.KEY_HARD_STATE, raw) == [2, "n1", 0]


@pytest.mark.parametrize(("extra", "needle", "record"), COMPANIONS)
def test_a_corrupted_companion_record_is_refused(
    open_store: Opener, data_dir: pathlib.Path, extra: dict[str, Any], needle: bytes, record: str
) -> None:
    store = open_store()
    store.append(hard_state=HardState(term=2, **extra), truncate_from=None, entries=())
    store.close()
    assert flip_everywhere(data_dir / "raft.lmdb" / "data.mdb", needle) >= 1
    with pytest.raises(StorageError, match=record):
        open_store()


@pytest.mark.parametrize(
    "record",
    [
        {"n2": "x"},
        [["n2"]],
        [["n2", ""]],
        [["n2", 7]],
        [["n3", "a"], ["n2", "b"]],  # not sorted
        [["n2", "a"], ["n2", "b"]],  # an id twice
    ],
)
def test_malformed_pins_records_do_not_parse(record: object) -> None:
    with pytest.raises(Corrupt, match="pins"):
        layout.parse_pins(record)
    assert layout.parse_pins(layout.pins_record(PINS)) == PINS
