#!/bin/bash
# usage: ab.sh CLIENTS PAIRS: interleaved pairs, A from $APATH (default /work/main), B from
# $BPATH (default /work/wt/x1) with $BENV set; each tree's code is imported by running from
# its directory with PYTHONPATH set to it (the shared venv's editable install is shadowed).
c=$1; n=$2; BENV=${BENV:-X=1}; APATH=${APATH:-/work/main}; BPATH=${BPATH:-/work/wt/x1}
one() {
  if [ "$1" = A ]; then out=$(cd $APATH && env PYTHONPATH=$APATH /work/main/.venv/bin/python -m univrs.bench.client --clients $c --duration 5 --repeat 1 --no-check 2>&1)
  else out=$(cd $BPATH && env PYTHONPATH=$BPATH $BENV /work/main/.venv/bin/python -m univrs.bench.client --clients $c --duration 5 --repeat 1 --no-check 2>&1); fi
  echo "$out" | grep -E "run 1|p50" | tr '\n' ' ' | sed 's/  */ /g'; echo " | $(uptime | sed 's/.*average://')"
}
for i in $(seq 1 $n); do
  if [ $((i % 2)) = 1 ]; then echo "A $(one A)"; echo "B $(one B)"; else echo "B $(one B)"; echo "A $(one A)"; fi
done
