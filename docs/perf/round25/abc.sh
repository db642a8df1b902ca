#!/bin/bash
# usage: abc.sh CLIENTS PAIRS : sample on (A) vs --no-check (B), interleaved
c=$1; n=$2
cd /work/main
for i in $(seq 1 $n); do
  for v in A B; do
    if [ $v = A ]; then x=""; else x="--no-check"; fi
    out=$(.venv/bin/python -m univrs.bench.client --clients $c --duration 5 --repeat 1 $x 2>&1)
    echo "$v $(echo "$out" | grep -E '^ +[0-9]+ clients' | head -1 | awk "{print \$4, \$6, \$9}") $(echo "$out" | grep 'CPU ms/op' | head -1 | sed 's/.*total//') $(uptime | sed 's/.*average://')"
  done
done
