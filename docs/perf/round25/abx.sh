#!/bin/bash
# usage: abx.sh CLIENTS PAIRS "A prefix/args" "B prefix/args" : interleaved, order alternating
# each spec: "PREFIX|ARGS" e.g. "chrt -b 0|" or "|--raft inline_write_bytes=0"
c=$1; n=$2; A=$3; B=$4
cd /work/main
one() {
  spec=$1; pre=${spec%%|*}; args=${spec#*|}
  out=$($pre .venv/bin/python -m univrs.bench.client --clients $c --duration 5 --repeat 1 --no-check $args 2>&1)
  echo "$(echo "$out" | grep -E '^ +[0-9]+ clients' | head -1 | awk "{print \$4, \$6, \$9}") $(echo "$out" | grep 'CPU ms/op' | head -1 | sed 's/.*total//') $(uptime | sed 's/.*average://')"
}
for i in $(seq 1 $n); do
  if [ $((i % 2)) = 1 ]; then echo "A $(one "$A")"; echo "B $(one "$B")"; else echo "B $(one "$B")"; echo "A $(one "$A")"; fi
done
