#!/bin/bash
# Round 19 (s19-pipe): interleaved rounds of variants at $CLIENTS (64) clients (the bench's own cluster,
# so its CPU per write per process stays), one benchmark at a time (flock).
# usage: ab.sh <codedir> <out> <rounds> "name|PIPE_RAFT lines[,PIPE_EXP]|bench args" ...
# e.g. ab.sh . /tmp/ab 3 "base||" "procs2||--client-procs 2" "gather0|batch_gather_ms = 0|" "hold|,hold|"
# (PIPE_RAFT: raftcfg/sitecustomize.py; PIPE_EXP: its experiments, lazy or hold)
here=$(dirname "$(readlink -f "$0")")
code=$1; out=$2; rounds=$3; shift 3
mkdir -p $out; cd $code
for r in $(seq 1 $rounds); do
  for v in "$@"; do
    IFS='|' read -r name raft args <<< "$v"
    IFS="," read -r raft exp <<< "$raft"; PIPE_EXP="$exp" PIPE_RAFT="$raft" PYTHONPATH=$here/raftcfg flock /work/wt/bench.lock .venv/bin/python -m univrs.bench.client --clients ${CLIENTS:-64} --duration 5 --repeat 1 --no-check --dir $out/$name.$r.d --json $out/$name.$r.json $args > $out/$name.$r.txt 2>&1
    echo "$name round $r: $(grep -E 'run 1:' $out/$name.$r.txt | sed 's/GC.*//; s/ \+/ /g') | $(grep -E 'CPU ms/op total' $out/$name.$r.txt | sed 's/ \+/ /g')"
  done
done
