#!/bin/bash
# usage: run.sh <repo> <outdir> [bench args]
repo=$1; out=$2; shift 2
rm -rf $out; mkdir -p $out
cd $repo
LAT_TRACE_DIR=$out PYTHONPATH=$(dirname "$(readlink -f "$0")") nice -n 10 .venv/bin/python -m univrs.bench.client --clients 1 --duration 6 --repeat 1 --no-check "$@" > $out/bench.txt 2>&1 &
bp=$!
# trigger once the bench client has stepped a lot (the measured phase is running)
for i in $(seq 1 600); do
  sleep 0.5
  python3 - "$out" <<'PY' && { sleep 2; touch $out/go; break; }
import json, glob, sys
for f in glob.glob(sys.argv[1] + "/*.json"):
    try: d = json.load(open(f))
    except Exception: continue
    if any("bench" in a for a in d["argv"]) and sum(d["steps"].values()) > 3000:
        sys.exit(0)
sys.exit(1)
PY
done
wait $bp
