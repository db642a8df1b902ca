"""A data.mdb with damaged pages is refused at open with a clear error, before LMDB maps it
(s16-fuzz; ``univrs/storage/pages.py``).

LMDB trusts its pages: a page of garbage where a tree expects a leaf failed an assertion
(``mdb_cursor_next: Assertion 'IS_LEAF(mp)' failed``) and aborted the process with SIGABRT at
every start, without naming the file. Each open runs in a child process, so the old behaviour
fails these tests (exit status -6) instead of killing the test run.
"""

from __future__ import annotations

import os
import pathlib
import random
import struct

import pytest

from tests.storage.test_storage_truncated import digest, open_in_child, written  # noqa: F401
from univrs.storage import header, pages

pytestmark = pytest.mark.skipif(not header.SUPPORTED, reason="64-bit LMDB layout only")
CASES = int(os.environ.get("UNIVRS_FUZZ_DISK_ROUNDS", "10"))  # a child process each
SEED = int(os.environ.get("UNIVRS_FUZZ_SEED", "16"))


def leaf_pages(path: pathlib.Path) -> list[int]:
    """The numbers of the pages flagged as leaves that name themselves, in file order."""
    data = path.read_bytes()
    psize = header.read_header(path).page_size
    found = []
    for pgno in range(2, len(data) // psize):
        own, _, flags = struct.unpack_from("=QHH", data, pgno * psize)
        if own == pgno and flags & pages.P_LEAF:
            found.append(pgno)
    return found


def test_the_walk_passes_a_whole_store(written: pathlib.Path) -> None:  # noqa: F811
    pages.check_trees(written, header.check_length(written))


def test_a_leaf_page_of_garbage_is_refused_and_left_alone(
    written: pathlib.Path,  # noqa: F811
    data_dir: pathlib.Path,
) -> None:
    psize = header.read_header(written).page_size
    leaves = leaf_pages(written)
    assert len(leaves) > 100
    pgno = leaves[len(leaves) // 2]  # a leaf of the log, reached by a cursor moving on
    with open(written, "r+b") as f:
        f.seek(pgno * psize)
        f.write(random.Random(16).randbytes(psize))
    before = digest(written)
    refused = open_in_child(data_dir)
    assert refused.returncode == 1, (refused.returncode, refused.stderr)  # not -6: SIGABRT
    assert f"corrupt data dir {data_dir}" in refused.stderr
    assert f"{written} is damaged: page {pgno}" in refused.stderr
    assert "nothing was changed" in refused.stderr and "--replace" in refused.stderr
    assert digest(written) == before


def test_random_damage_opens_or_is_refused_never_kills_the_process(
    written: pathlib.Path,  # noqa: F811
    data_dir: pathlib.Path,
) -> None:
    """Seeded damage of every kind: bytes anywhere, a whole page of garbage, bytes in the meta
    pages, a page header field. Each open either succeeds (the damage hit free space; the
    log's checksums vouch for what it reads) or is a StorageError; never a signal."""
    rng = random.Random(SEED)
    pristine = written.read_bytes()
    psize = header.read_header(written).page_size
    npages = len(pristine) // psize
    for case in range(CASES):
        data = bytearray(pristine)
        mode = case % 4
        if mode == 0:
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif mode == 1:
            p = rng.randrange(2, npages)
            data[p * psize : (p + 1) * psize] = rng.randbytes(psize)
        elif mode == 2:
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(2 * psize)] = rng.randrange(256)
        else:
            data[rng.randrange(2, npages) * psize + rng.randrange(16)] = rng.randrange(256)
        written.write_bytes(bytes(data))
        done = open_in_child(data_dir)
        assert done.returncode in (0, 1), (case, done.returncode, done.stderr[-500:])
        if done.returncode == 1:
            assert str(data_dir) in done.stderr, done.stderr
