import pathlib, sys, time, json, signal, shutil
from univrs.bench.client import start_cluster
folder = pathlib.Path(sys.argv[1]); shutil.rmtree(folder, ignore_errors=True); folder.mkdir(parents=True)
cluster, eps, pids, apis = start_cluster(folder, 3)
json.dump({"eps": eps, "pids": pids}, open(folder / "info.json", "w"))
print(eps, pids, flush=True)
try:
    while not (folder / "stop").exists():
        time.sleep(0.5)
finally:
    cluster.stop_all()
