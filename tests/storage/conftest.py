"""Fixtures for the LMDB store tests (real LMDB in tmp_path)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator

import pytest

from univrs.storage import LogStore


@pytest.fixture
def data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "node"


@pytest.fixture
def open_store(data_dir: pathlib.Path) -> Iterator[Callable[..., LogStore]]:
    """Opens stores on data_dir (node n1 unless told otherwise); closes them all at the end."""
    opened: list[LogStore] = []

    def opener(**kwargs: object) -> LogStore:
        kwargs.setdefault("node_id", "n1")
        store = LogStore.open(data_dir, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()
