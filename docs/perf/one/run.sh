#!/bin/bash
# usage: run.sh <tree with marks (marks.sh) and its own .venv> <outdir> [bench args]
# A 14 s one-client bench against a fresh local cluster, marks recorded for 7 s from 6 s in
# (GO, SECS, DUR override); `uptime` before and after in OUT/uptime.txt. Takes the bench lock.
repo=$1; out=$2; shift 2
rm -rf "$out"; mkdir -p "$out"
cd "$repo" || exit 1
( sleep "${GO:-6}"; touch "$out/go" ) &
uptime > "$out/uptime.txt"
LAT_PROBE_DIR=$out LAT_PROBE_SECONDS=${SECS:-7} flock /work/wt/bench.lock .venv/bin/python -m univrs.bench.client \
    --clients 1 --duration "${DUR:-14}" --repeat 1 --no-check "$@" > "$out/bench.txt" 2>&1
wait
uptime >> "$out/uptime.txt"
