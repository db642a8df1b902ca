"""The node's digest is computed from a view, streamed (``capture_digest``,
``univrs.sm.snapshot.streamed_digest``): the same digest as ``state_digest``, without building
the state's text or row lists, in a worker thread."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.sm.helpers import spec
from tests.sm.test_sm_snapshot import populated
from univrs.bench.scale_state import build
from univrs.runtime.snapshots import capture, capture_digest
from univrs.sm import CreateWorkload, MintCredits, state_digest
from univrs.sm import objects as objects_module
from univrs.sm import snapshot as snapshot_module
from univrs.storage.sm_tables import StateEnv, objects_in_lmdb


@pytest.fixture
def lmdb_objects(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    made: list[objects_module.Objects] = []

    def new_objects() -> objects_module.Objects:
        made.append(objects_in_lmdb(str(tmp_path / str(len(made))), sync=False, map_size=1 << 26))
        return made[-1]

    monkeypatch.setattr(objects_module, "new_objects", new_objects)
    yield
    made.clear()


def test_in_memory() -> None:
    log = populated()
    log(MintCredits(to_peer="a", amount=3, reason="r"))
    log(MintCredits(to_peer="0", amount=2, reason="r"))  # balances out of id order
    assert capture_digest(log.sm)() == state_digest(log.sm)


@pytest.mark.parametrize("batch", [1, 7, 1024])
def test_on_lmdb_a_view_of_the_state_then(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """Rows hashed in batches of any size (array separators right); the digest is of the
    state when the view was taken, whatever is applied after."""
    monkeypatch.setattr(snapshot_module, "DIGEST_BATCH", batch)
    env = StateEnv(str(tmp_path / "state.lmdb"), map_size=1 << 27)
    sm = env.replace(env.stage(capture(build(300))()))
    expected = state_digest(sm)
    digest = capture_digest(sm)
    with sm.batch():
        sm.apply(CreateWorkload(id="later", spec=spec("later")), index=10**6, term=9)
    assert digest() == expected != state_digest(sm)
    assert capture_digest(sm)() == state_digest(sm)
    env.close()


@pytest.mark.usefixtures("lmdb_objects")
def test_an_empty_lmdb_state() -> None:
    sm = type(populated().sm)()
    assert capture_digest(sm)() == state_digest(sm)
