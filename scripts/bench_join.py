"""The join alone, repeatably (docs/state-at-scale.md, ninth increment).

    .venv/bin/python scripts/bench_join.py SEED FOLDER [spy]

SEED is a seed file of ``scripts/bench_scale --seed``. Three members are restored from it
with ``univrs snapshot restore`` once (FOLDER.pristine keeps them; later runs copy it to
FOLDER), started, loaded for LOAD seconds (environment, default 10) by the 64 writers of
``scripts/bench_scale`` (the log after the snapshot that the joining node catches up), then
a fourth member joins. Prints JSON: ``scripts/bench_scale``'s join figures, the answers of
a ``/livez`` probe of the joining node (every 50 ms) that took over 0.25 s, and the joining
node's log lines. With ``spy``, ``py-spy dump`` of the joining node 30 times from "snapshot
installed" on (FOLDER/dumps.txt; py-spy must be installed in the venv)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import trio

from univrs.bench.scale_load import Load
from univrs.bench.scale_probes import Budget
from univrs.bench.scale_steps import NODE_CONFIG, measure_join, restore_members, write_backup
from univrs.tools.devcluster import LocalCluster, NodeProc, wait_for


def stamp(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


seed = pathlib.Path(sys.argv[1])
folder = pathlib.Path(sys.argv[2]).resolve()
spy = len(sys.argv) > 3 and sys.argv[3] == "spy"
pristine = folder.with_name(folder.name + ".pristine")
with seed.open("rb") as src:
    head = json.loads(src.readline())
extra = NODE_CONFIG + '[state]\nbackend = "lmdb"\n'
clock = Budget(3600)
out = {}
if not pristine.exists():
    shutil.rmtree(folder, ignore_errors=True)
    cluster = LocalCluster.with_free_ports(folder, size=3, spares=1, extra_config=extra)
    cluster.bootstrap = False
    cluster.write_configs()
    data = seed.read_bytes().split(b"\n", 1)[1]
    backup = folder / "seed.snap"
    write_backup(data, index=head["index"], term=head["term"], path=backup)
    del data
    took = restore_members(cluster, backup, clock, "lmdb")
    backup.unlink()
    out["restore_s"] = [round(t, 2) for t in took]
    (folder / "nodes.json").write_text(
        json.dumps([[n.node_id, n.raft_addr, n.api_addr] for n in cluster.nodes])
    )
    shutil.copytree(folder, pristine, symlinks=True)
else:
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(pristine, folder, symlinks=True)
nodes = [
    NodeProc(node_id=a, raft_addr=b, api_addr=c, folder=folder)
    for a, b, c in json.loads((folder / "nodes.json").read_text())
]
cluster = LocalCluster(
    folder=folder, nodes=nodes, extra_config=extra, bootstrap=False, spares=frozenset({"n4"})
)
members, joiner = cluster.nodes[:3], cluster.nodes[3]
try:
    for node in members:
        cluster.start(node)
    cluster.wait_ready(members, 600)
    leader = wait_for(lambda: cluster.leader(members), 120, "a leader")
    load = Load(endpoints=[m.raft_addr for m in members], n=head["objects"])
    trio.run(lambda: load.run(float(os.environ.get("LOAD", "10")), reader=None))
    out["load_acks"] = len(load.acks)
    leader = wait_for(lambda: cluster.leader(members), 120, "a leader")
    dumps = []
    stop = [False]

    def dumper():
        while not stop[0]:
            if joiner.log_path.exists() and '"snapshot installed"' in joiner.log_path.read_text(
                errors="replace"
            ):
                break
            time.sleep(0.01)
        for _ in range(30):
            if stop[0]:
                break
            t = time.time()
            r = subprocess.run(
                [
                    os.path.join(os.path.dirname(sys.executable), "py-spy"),
                    "dump",
                    "--pid",
                    str(joiner.pid),
                ],
                capture_output=True,
                text=True,
            )
            dumps.append(f"=== {stamp(t)}\n{r.stdout}{r.stderr}")

    th = threading.Thread(target=dumper)
    if spy:
        th.start()
    slow = []

    def livez():
        import urllib.request

        while not stop[0]:
            t = time.time()
            try:
                urllib.request.urlopen(f"http://{joiner.api_addr}/livez", timeout=10).read()
            except Exception:
                time.sleep(0.05)
                continue
            took = time.time() - t
            if took > 0.25:
                slow.append((stamp(t), round(took, 2)))
            time.sleep(0.05)

    lz = threading.Thread(target=livez)
    lz.start()
    out.update(measure_join(cluster, leader, members, joiner, clock))
    stop[0] = True
    lz.join()
    out["livez_slow"] = slow
    if spy:
        th.join()
        (folder / "dumps.txt").write_text("\n".join(dumps))
    n4 = joiner.log_path.read_text(errors="replace").splitlines()
    out["n4_log"] = [
        line[11:23] + " " + line[30:170]
        for line in n4
        if "univrs.node" in line or "univrs.join" in line or "redial" in line
    ]
finally:
    cluster.stop_all()
out["loadavg"] = os.getloadavg()
print(json.dumps(out, indent=1))
