"""A local 3-node cluster for run.sh / ab.sh (docs/perf/timeline/cluster.py plus $PIPE_RAFT:
extra lines for each node's [raft] table, e.g. "batch_gather_ms = 0")."""
import json, os, pathlib, shutil, sys, time

from univrs.bench.client import start_cluster

folder = pathlib.Path(sys.argv[1]); shutil.rmtree(folder, ignore_errors=True); folder.mkdir(parents=True)
extra = os.environ.get("PIPE_RAFT", "").replace(";", "\n")
cluster, eps, pids, apis = start_cluster(folder, 3, extra_config=extra)
json.dump({"eps": eps, "pids": pids}, open(folder / "info.json", "w"))
print(eps, pids, flush=True)
try:
    while not (folder / "stop").exists():
        time.sleep(0.5)
finally:
    cluster.stop_all()
