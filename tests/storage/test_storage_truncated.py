"""A data.mdb cut short is refused at open with a clear error, before LMDB maps it.

Mapping a file shorter than the pages its last transaction uses kills the process with SIGBUS
at the first access past the end, without a word. Each open runs in a child process, so the
old behaviour fails these tests (exit status -7) instead of killing the test run.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys

import lmdb
import pytest

from tests.storage.helpers import make_entries
from univrs.raft.messages import HardState
from univrs.storage import LogStore, header
from univrs.storage.datadir import ENV_DIR

pytestmark = pytest.mark.skipif(not header.SUPPORTED, reason="64-bit LMDB layout only")

OPEN = """
import sys
from univrs.errors import StorageError
from univrs.storage import LogStore
try:
    LogStore.open(sys.argv[1], node_id="n1", create=False).close()
except StorageError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
print("opened")
"""


def open_in_child(data_dir: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", OPEN, str(data_dir)], capture_output=True, text=True, timeout=60
    )


def digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def written(data_dir: pathlib.Path) -> pathlib.Path:
    """A closed store holding 3000 entries (a few hundred pages); returns its data.mdb."""
    with LogStore.open(data_dir, node_id="n1", cluster_id="c-1") as store:
        for first in range(1, 3001, 500):
            store.append(
                hard_state=HardState(term=1, vote="n1", commit=first),
                truncate_from=None,
                entries=make_entries(first, first + 499, size=300),
            )
    return data_dir / ENV_DIR / "data.mdb"


def test_the_header_reader_agrees_with_lmdb(written: pathlib.Path) -> None:
    env = lmdb.open(str(written.parent), readonly=True, lock=False, max_dbs=4)
    try:
        info, psize = env.info(), env.stat()["psize"]
    finally:
        env.close()
    found = header.check_length(written)
    assert found.page_size == psize
    assert found.last_page == info["last_pgno"]
    assert found.txnid == info["last_txnid"]
    assert found.file_bytes == written.stat().st_size >= found.needed_bytes


@pytest.mark.parametrize(
    "cut",
    ["inside the first meta page", "inside the second meta page", "after the meta pages",
     "half the file", "the last page"],
)  # fmt: skip
def test_a_truncated_data_file_is_refused_and_left_alone(
    written: pathlib.Path, data_dir: pathlib.Path, cut: str
) -> None:
    size, page = written.stat().st_size, os.sysconf("SC_PAGESIZE")
    keep = {
        "inside the first meta page": 100,
        "inside the second meta page": page + 100,
        "after the meta pages": 2 * page + 1,
        "half the file": size // 2,
        "the last page": size - page,
    }[cut]
    os.truncate(written, keep)
    before = digest(written)
    refused = open_in_child(data_dir)
    assert refused.returncode == 1, (refused.returncode, refused.stderr)  # not -7: SIGBUS
    assert f"corrupt data dir {data_dir}" in refused.stderr
    assert str(written) in refused.stderr
    assert "truncated" in refused.stderr or "too short" in refused.stderr
    assert "nothing was changed" in refused.stderr and "--replace" in refused.stderr
    assert written.stat().st_size == keep and digest(written) == before


def test_a_whole_data_file_with_trailing_bytes_still_opens(
    written: pathlib.Path, data_dir: pathlib.Path
) -> None:
    with open(written, "ab") as f:
        f.write(b"\0" * 8192)  # longer than its pages: harmless to LMDB
    opened = open_in_child(data_dir)
    assert opened.returncode == 0 and "opened" in opened.stdout, opened.stderr


def test_a_file_that_is_not_lmdb_is_refused(written: pathlib.Path, data_dir: pathlib.Path) -> None:
    written.write_bytes(b"not an lmdb file".ljust(3 * 4096, b"\0"))
    refused = open_in_child(data_dir)
    assert refused.returncode == 1 and "is not an LMDB data file" in refused.stderr
