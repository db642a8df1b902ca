"""Disk hygiene with a real node: its data file's size and use are metrics, and a data.mdb
cut short is refused at start with a clear error and a non-zero exit (it used to die of
SIGBUS without a word), leaving the file as it was."""

from __future__ import annotations

import hashlib
import os
import urllib.request

from univrs.tools.devcluster import LocalCluster, NodeProc

from .conftest import DEADLINE, MakeCluster, univrs
from .test_membership_process import write_workloads


def gauge(node: NodeProc, name: str) -> float:
    with urllib.request.urlopen(f"http://{node.api_addr}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, f"{name} not exported once"
    return values[0]


def test_db_size_metrics_then_a_truncated_data_file_is_refused(make_cluster: MakeCluster) -> None:
    cluster: LocalCluster = make_cluster(1)
    cluster.start_all()
    node = cluster.wait_leader(DEADLINE)
    write_workloads(node, "w", 20)
    data_file = node.data_dir / "raft.lmdb" / "data.mdb"
    size = gauge(node, "univrs_storage_db_bytes")
    in_use = gauge(node, "univrs_storage_db_in_use_bytes")
    print(f"\ndata.mdb {size:.0f} bytes, {in_use:.0f} in use")
    assert size == data_file.stat().st_size
    assert 0 < in_use <= size
    # `univrs node start` froze its imported modules (univrs/server/heap.py): the GC skips them.
    assert gauge(node, "univrs_gc_frozen_objects") > 20_000
    assert cluster.stop(node) == 0

    os.truncate(data_file, data_file.stat().st_size // 2)
    before = hashlib.sha256(data_file.read_bytes()).hexdigest()
    refused = univrs("node", "start", "--config", str(node.config_path), timeout=60)
    print(refused.stderr.strip())
    assert refused.returncode == 1, (refused.returncode, refused.stderr)  # -7 was SIGBUS
    assert f"{data_file} is truncated to" in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert hashlib.sha256(data_file.read_bytes()).hexdigest() == before
