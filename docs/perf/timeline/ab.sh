#!/bin/bash
# usage: ab.sh <outdir> <pairs> <clients> <dirA> <dirB> ...
out=$1; pairs=$2; clients=$3; shift 3
mkdir -p $out
for i in $(seq 1 $pairs); do
  if [ $((i % 2)) -eq 1 ]; then order="$@"; else order=$(echo "$@" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for d in $order; do
    name=$(basename $d)
    (cd $d && flock /work/wt/bench.lock .venv/bin/python -m univrs.bench.client --clients $clients --duration 5 --repeat 1 --no-check --json $out/$name-$clients-$i.json > $out/$name-$clients-$i.txt 2>&1)
  done
done
