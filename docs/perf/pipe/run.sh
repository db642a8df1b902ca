#!/bin/bash
# Round 19 (s19-pipe): a 64-client run against a local 3-node cluster with markers in every
# process (sitecustomize.py) and `perf sched record` of the whole machine for 1 s, on the
# same clock. usage: run.sh <codedir> <out> [clients] [extra bench args...]
here=$(dirname "$(readlink -f "$0")")
code=$1; out=$2; clients=${3:-64}; shift 3; extra="$*"
d=${TMPDIR:-/tmp}/pipe-$$; rm -rf $d; mkdir -p $out
cd $code
export PIPE_DIR=$out PIPE_SECONDS=1 PYTHONPATH=$here
${NICE:-} .venv/bin/python docs/perf/timeline/cluster.py $d > $d.log 2>&1 &
cp=$!
for i in $(seq 1 60); do [ -f $d/info.json ] && break; sleep 0.5; done
cp $d/info.json $out/info.json
EPS=$(python3 -c "import json;print(','.join(json.load(open('$d/info.json'))['eps']))")
flock /work/wt/bench.lock bash -c "
uptime > $out/uptime
${NICE:-} .venv/bin/python -m univrs.bench.client --endpoints $EPS --clients $clients --duration 6 --repeat 1 --no-check --json $out/bench.json $extra > $out/bench.txt 2>&1 &
bp=\$!
sleep 4
perf sched record -a -k CLOCK_MONOTONIC -o $out/sched.data -- sleep 1.6 > /dev/null 2>&1 &
pp=\$!
sleep 0.4
touch $out/go
wait \$pp
wait \$bp
uptime >> $out/uptime
"
touch $d/stop; wait $cp
sleep 1; ls $out
