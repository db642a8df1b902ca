#!/bin/bash
# usage: cswitch.sh <codedir> <outfile> [clients]
code=$1; out=$2; clients=${3:-1}
d=${TMPDIR:-/tmp}/cs-$(basename $code); rm -rf $d
cd $code
.venv/bin/python $(dirname "$(readlink -f "$0")")/cluster.py $d > $d.log 2>&1 &
cp=$!
for i in $(seq 1 60); do [ -f $d/info.json ] && break; sleep 0.5; done
EPS=$(python3 -c "import json;print(','.join(json.load(open('$d/info.json'))['eps']))")
PIDS=$(python3 -c "import json;print(' '.join(str(p) for p in json.load(open('$d/info.json'))['pids'].values()))")
snap() { for p in $PIDS; do for t in /proc/$p/task/*; do echo "$p $(basename $t) $(awk '{print $14, $15}' $t/stat) $(grep -E '^(voluntary|nonvoluntary)_ctxt' $t/status | awk '{print $2}' | tr '\n' ' ')"; done; done; }
flock /work/wt/bench.lock bash -c "
$(declare -f snap); PIDS='$PIDS'
.venv/bin/python -m univrs.bench.client --endpoints $EPS --clients $clients --duration 2 --repeat 1 --no-check > /dev/null 2>&1
snap > $out.before
.venv/bin/python -m univrs.bench.client --endpoints $EPS --clients $clients --duration 6 --repeat 1 --no-check --json $out.json > $out.txt 2>&1
snap > $out.after
"
touch $d/stop; wait $cp
