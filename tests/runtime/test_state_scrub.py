"""``univrs state-scrub`` (s14-small, univrs/server/state_scrub.py): a stopped node's
``state.lmdb``, which carries no checksums, compared with its stored snapshot (CRCs) plus its
log (a CRC per entry) replayed up to the state's applied index. Intact: equal digests; a row
changed to another valid row, or one that no longer decodes, is reported as damage (the
CLI exits 1 and says what to do), never a crash."""

from __future__ import annotations

import json
import pathlib

import cbor2
import lmdb
import pytest
import trio
from click.testing import CliRunner

from tests.api.helpers import Cluster, make_configs
from univrs.cli.root import main
from univrs.server.node import Node
from univrs.server.state_scrub import scrub_state
from univrs.sm import CreateWorkload, Envelope, WorkloadSpec

pytestmark = pytest.mark.timeout(120)


async def _data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A stopped one-node data dir on the lmdb backend: workloads and credits written, its
    own snapshot taken after some of them, entries after it."""
    configs = make_configs(tmp_path, 1, state_backend="lmdb", snapshot_threshold=12)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=configs)
        node: Node = await cluster.start("n1")
        await cluster.wait_leader()
        for n in range(30):
            spec = WorkloadSpec(name=f"w{n}", image="img", replicas=1 + n % 3)
            await node.store.run(Envelope(command=CreateWorkload(id=f"w{n}", spec=spec)))
        await cluster.kill("n1")
    return tmp_path / "n1"


def _rewrite_workload(data_dir: pathlib.Path, change: bytes | None) -> None:
    """Change one stored workload row: its image to another valid one (``change`` None), or
    its bytes to ``change``."""
    env = lmdb.open(str(data_dir / "state.lmdb"), max_dbs=32, subdir=True)
    try:
        db = env.open_db(b"workloads")
        with env.begin(write=True) as txn:
            stored = txn.get(b"w7", db=db)
            assert stored is not None
            raw = bytes(stored)
            if change is None:
                assert raw.count(b"img") == 1
                change = raw.replace(b"img", b"imh")
                cbor2.loads(change)  # still a valid row
            txn.put(b"w7", change, db=db)
    finally:
        env.close()


async def test_an_intact_state_matches_its_snapshot_and_log(tmp_path: pathlib.Path) -> None:
    data_dir = await _data_dir(tmp_path)
    found = scrub_state(data_dir)
    assert found.intact is True, found
    assert found.snapshot_index > 0 and found.replayed > 0
    assert found.applied_index == found.snapshot_index + found.replayed
    assert found.state_digest == found.expected_digest is not None
    result = CliRunner().invoke(main, ["state-scrub", "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["intact"] is True


async def test_a_row_changed_to_another_valid_row_is_damage(tmp_path: pathlib.Path) -> None:
    data_dir = await _data_dir(tmp_path)
    _rewrite_workload(data_dir, None)
    found = scrub_state(data_dir)
    assert found.intact is False
    assert found.state_digest != found.expected_digest and "differs" in found.reason
    result = CliRunner().invoke(main, ["state-scrub", "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert "DAMAGED" in result.output and "move" in result.output


async def test_a_row_that_does_not_decode_is_damage(tmp_path: pathlib.Path) -> None:
    data_dir = await _data_dir(tmp_path)
    _rewrite_workload(data_dir, b"\xff\x00garbage")
    found = scrub_state(data_dir)
    assert found.intact is False and "does not read back" in found.reason


async def test_a_running_node_is_refused(tmp_path: pathlib.Path) -> None:
    configs = make_configs(tmp_path, 1, state_backend="lmdb")
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=configs)
        await cluster.start("n1")
        result = CliRunner().invoke(main, ["state-scrub", "--data-dir", str(tmp_path / "n1")])
        assert result.exit_code == 1 and "error:" in result.output
        await cluster.kill("n1")
