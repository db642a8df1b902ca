"""A state env (``state.lmdb``) with damaged pages is refused at open with a clear error,
before LMDB maps it (``univrs/storage/sm_tables.py`` ``check_state_pages``), as the log's
store is (test_storage_damaged_pages.py).

The state has no checksums and is written without fsync, so a bad sector or a machine crash
can leave pages LMDB cannot read: a leaf of garbage failed an LMDB assertion and aborted the
node with SIGABRT at every start, naming no file. Each open runs in a child process that
also reads every row, so the old behaviour fails these tests (a signal's negative exit
status) instead of killing the test run.
"""

from __future__ import annotations

import pathlib
import random
import subprocess
import sys

import pytest

from tests.runtime.state_envs import Clock, apply_next
from tests.storage.test_storage_damaged_pages import leaf_pages
from tests.storage.test_storage_truncated import digest
from univrs.sm import CreateWorkload, WorkloadSpec
from univrs.storage import header
from univrs.storage.sm_tables import StateEnv

pytestmark = pytest.mark.skipif(not header.SUPPORTED, reason="64-bit LMDB layout only")

# Opens the env as a node's start does, then reads every row of every table (a damaged leaf
# anywhere is reached), as a scrub or a list would.
OPEN = """
import sys
from univrs.errors import StorageError
from univrs.storage.sm_tables import StateEnv
try:
    env = StateEnv(sys.argv[1])
except StorageError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
env.load()
raw = env.store.env
with raw.begin() as txn:
    names = [bytes(k) for k, _ in txn.cursor()]
    for name in names:
        db = raw.open_db(name, txn=txn, create=False)
        for _ in txn.cursor(db=db):
            pass
env.close()
print("opened")
"""


def open_in_child(path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", OPEN, str(path)], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def state_env(tmp_path: pathlib.Path) -> pathlib.Path:
    """A closed state env holding 3000 workloads (a few hundred pages); returns its folder."""
    path = tmp_path / "state.lmdb"
    env = StateEnv(str(path))
    sm = env.load()
    clock = Clock()
    image = "registry.example/" + "x" * 200  # rows of a few hundred bytes: many leaves
    for n in range(3000):
        apply_next(
            sm, clock, CreateWorkload(id=f"w{n:05d}", spec=WorkloadSpec(name="w", image=image))
        )
    env.close()
    return path


def test_an_intact_state_env_opens(state_env: pathlib.Path) -> None:
    done = open_in_child(state_env)
    assert done.returncode == 0, done.stderr
    assert "opened" in done.stdout


def test_a_leaf_page_of_garbage_is_refused_and_left_alone(state_env: pathlib.Path) -> None:
    data_file = state_env / "data.mdb"
    psize = header.read_header(data_file).page_size
    leaves = leaf_pages(data_file)
    assert len(leaves) > 50
    pgno = leaves[len(leaves) // 2]
    with open(data_file, "r+b") as f:
        f.seek(pgno * psize)
        f.write(random.Random(17).randbytes(psize))
    before = digest(data_file)
    refused = open_in_child(state_env)
    assert refused.returncode == 1, (refused.returncode, refused.stderr[-500:])  # not a signal
    assert f"state env {state_env} is corrupt: {data_file} is damaged: page {pgno}" in (
        refused.stderr
    )
    assert digest(data_file) == before


def test_a_state_env_cut_short_is_refused(state_env: pathlib.Path) -> None:
    data_file = state_env / "data.mdb"
    size = data_file.stat().st_size
    with open(data_file, "r+b") as f:
        f.truncate(size // 2)
    refused = open_in_child(state_env)
    assert refused.returncode == 1, (refused.returncode, refused.stderr[-500:])  # not SIGBUS
    assert f"state env {state_env} is corrupt: {data_file} is truncated" in refused.stderr


def test_random_damage_opens_or_is_refused_never_kills_the_process(
    state_env: pathlib.Path,
) -> None:
    """Seeded damage: a whole page of garbage, or bytes in a page header. Each open either
    succeeds (the damage hit free space or a value's bytes) or is a StorageError; never a
    signal."""
    data_file = state_env / "data.mdb"
    rng = random.Random(17)
    pristine = data_file.read_bytes()
    psize = header.read_header(data_file).page_size
    npages = len(pristine) // psize
    for case in range(6):
        data = bytearray(pristine)
        p = rng.randrange(2, npages)
        if case % 2 == 0:
            data[p * psize : (p + 1) * psize] = rng.randbytes(psize)
        else:
            data[p * psize + rng.randrange(16)] = rng.randrange(256)
        data_file.write_bytes(bytes(data))
        done = open_in_child(state_env)
        assert done.returncode in (0, 1), (case, done.returncode, done.stderr[-500:])
        if done.returncode == 1:
            assert f"state env {state_env}" in done.stderr, done.stderr
