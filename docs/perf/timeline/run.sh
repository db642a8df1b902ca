#!/bin/bash
# usage: probe_run.sh <repo> <outdir> [bench args]
repo=$1; out=$2; shift 2
rm -rf $out; mkdir -p $out
cd $repo
( sleep ${GO:-7}; touch $out/go ) &
LAT_PROBE_DIR=$out LAT_PROBE_SECONDS=${SECS:-2} flock /work/wt/bench.lock .venv/bin/python -m univrs.bench.client --clients 1 --duration 8 --repeat 1 --no-check "$@" > $out/bench.txt 2>&1
wait
