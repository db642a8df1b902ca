"""The state machine's backend for tests/sm: ``UNIVRS_SM_BACKEND=lmdb`` runs every test here
(the property tests included) with the object tables in LMDB (``univrs.storage.sm_tables``), one
environment per state machine in a temporary directory; default (or ``memory``): in memory.

The LMDB environments are opened without fsync (``sync=False``): the tests check what the
tables answer, not durability, and hypothesis builds thousands of state machines."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from univrs.sm import objects as objects_module
from univrs.storage.sm_tables import objects_in_lmdb

BACKEND = os.environ.get("UNIVRS_SM_BACKEND", "memory")
if BACKEND not in ("memory", "lmdb"):
    raise pytest.UsageError(f"UNIVRS_SM_BACKEND={BACKEND!r}: memory or lmdb")


@pytest.fixture(autouse=True)
def sm_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Installs the selected backend for the test's state machines."""
    if BACKEND == "memory":
        yield BACKEND
        return
    folder = tempfile.mkdtemp(prefix="univrs-sm-lmdb.")
    made: list[objects_module.Objects] = []

    def new_objects() -> objects_module.Objects:
        made.append(
            objects_in_lmdb(os.path.join(folder, str(len(made))), sync=False, map_size=1 << 26)
        )
        return made[-1]

    monkeypatch.setattr(objects_module, "new_objects", new_objects)
    try:
        yield BACKEND
    finally:
        made.clear()
        shutil.rmtree(folder, ignore_errors=True)
