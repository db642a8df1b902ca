"""LogStore keeps the ids of a node's folded configurations (``HardState.named``) with its hard
state, across reopens (s13-live, docs/liveness-gaps.md): configurations compaction or a
snapshot's install folded away still name their ids to the plaintext rules for stale members
(univrs/raft/gate.py ``_once_listed``), also after a restart. (The record's layout and its
refusal when damaged: tests/storage/test_storage_pins.py, with the pins'.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.storage.helpers import make_entries
from univrs.raft.messages import HardState
from univrs.storage import LogStore, layout
from univrs.storage.layout import Corrupt

Opener = Callable[..., LogStore]

NAMED = ("n1", "n3", "n7-departed")


def test_named_ids_survive_a_reopen_with_the_hard_state(open_store: Opener) -> None:
    store = open_store()
    hs = HardState(term=2, vote="n1", commit=1, named=NAMED[:2])
    store.append(hard_state=hs, truncate_from=None, entries=make_entries(1, 3, term=2))
    store.close()
    store = open_store()
    assert store.initial_state().hard_state == hs
    grown = HardState(term=3, commit=2, pins=(("n2", "inc2"),), named=NAMED)
    store.append(hard_state=grown, truncate_from=None, entries=())
    store.close()
    store = open_store()
    assert store.initial_state().hard_state == grown
    # A hard state without them (a commit that moved) keeps the record: they only grow.
    store.append(hard_state=HardState(term=3, commit=3), truncate_from=None, entries=())
    store.close()
    assert open_store().hard_state().named == NAMED


@pytest.mark.parametrize(
    "record",
    [{"n2": "x"}, ["n2", ""], ["n2", 7], ["n3", "n2"], ["n2", "n2"]],
)
def test_malformed_named_records_do_not_parse(record: object) -> None:
    with pytest.raises(Corrupt, match="named"):
        layout.parse_named(record)
    assert layout.parse_named(layout.named_record(NAMED)) == NAMED
