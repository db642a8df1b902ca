"""s13-audit: a node refuses a data dir whose hard state is behind its log.

A node writes the hard state of a term with (or before) every entry of that term and never
commits past its log. A hard state record that went missing was read as term 0 and no vote
(``LogStore`` has no rule against it: its own tests write such stores): the node started,
following nobody at term 0 with a log of term-3 entries, and would grant a vote in term 3
again, after voting in it before: two leaders of one term."""

from __future__ import annotations

import pathlib

import lmdb
import pytest

from tests.storage.helpers import make_entries
from univrs.config import load_config
from univrs.errors import StorageError
from univrs.raft.messages import HardState
from univrs.server.datadir import open_raw
from univrs.storage import LogStore, layout


def _data_dir(tmp_path: pathlib.Path, hard_state: HardState | None) -> pathlib.Path:
    """A member's data dir: entries 1..5 of term 3, voted for n2 in term 3; its hard state
    record then replaced by ``hard_state`` (None: deleted), as damage or a rollback would."""
    data_dir = tmp_path / "node"
    store = LogStore.open(data_dir, node_id="n1", cluster_id="c-1")
    store.append(
        hard_state=HardState(term=3, vote="n2", commit=2),
        truncate_from=None,
        entries=make_entries(1, 5, term=3),
    )
    store.close()
    env = lmdb.open(str(data_dir / "raft.lmdb"), max_dbs=16)
    try:
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            if hard_state is None:
                assert txn.delete(layout.KEY_HARD_STATE, db=meta)
            else:
                txn.put(
                    layout.KEY_HARD_STATE,
                    layout.encode_record(
                        layout.KEY_HARD_STATE, layout.hard_state_record(hard_state)
                    ),
                    db=meta,
                )
    finally:
        env.close()
    return data_dir


@pytest.mark.parametrize(
    ("hard_state", "says"),
    [
        (None, "term 0, below its log's last term 3"),
        (HardState(term=2, vote="n3", commit=2), "term 2, below its log's last term 3"),
        # (The store refuses this one itself since s13-small: either refusal will do.)
        (HardState(term=3, vote="n2", commit=9), r"commits? 9,? beyond .*5"),
    ],
)
def test_a_hard_state_behind_the_log_is_refused_at_start(
    tmp_path: pathlib.Path, hard_state: HardState | None, says: str
) -> None:
    data_dir = _data_dir(tmp_path, hard_state)
    config = load_config(overrides={"node_id": "n1", "data_dir": str(data_dir)})
    with pytest.raises(StorageError, match=says):
        open_raw(config)
    # Refused, not half-opened: the lock is released, the refusal is the same again.
    with pytest.raises(StorageError, match=says):
        open_raw(config)


def test_an_intact_hard_state_opens(tmp_path: pathlib.Path) -> None:
    data_dir = _data_dir(tmp_path, HardState(term=4, vote="n1", commit=4))
    config = load_config(overrides={"node_id": "n1", "data_dir": str(data_dir)})
    storage, initial = open_raw(config)
    storage.close()
    assert initial.hard_state.term == 4 and initial.entries[-1].index == 5
