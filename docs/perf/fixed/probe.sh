#!/bin/bash
# Round 18 (s18-fixed): CPU per write per thread (/proc), per trio task step (sitecustomize.py),
# optionally strace -c or py-spy of the leader, against a running local cluster.
here=$(dirname "$(readlink -f "$0")")
# usage: probe.sh <codedir> <outprefix> [clients] [strace|spy]   (SPYOPT=--gil for py-spy --gil)
# then: python3 sum.py OUT (per thread), cpusum.py OUT (per task step), spysum.py OUT.spy.leader.txt
code=$1; out=$2; clients=${3:-1}; extra=${4:-}
d=${TMPDIR:-/tmp}/fx-$(basename $code)-$$; rm -rf $d
cd $code
mkdir -p $out.cpu; LAT_CPU_DIR=$out.cpu PYTHONPATH=$here .venv/bin/python $here/../timeline/cluster.py $d > $d.log 2>&1 &
cp=$!
for i in $(seq 1 60); do [ -f $d/info.json ] && break; sleep 0.5; done
cp $d/info.json $out.info.json
EPS=$(python3 -c "import json;print(','.join(json.load(open('$d/info.json'))['eps']))")
PIDS=$(python3 -c "import json;print(' '.join(str(p) for p in json.load(open('$d/info.json'))['pids'].values()))")
snap() { for p in $PIDS; do for t in /proc/$p/task/*; do echo "$p $(basename $t) $(awk '{print $14, $15}' $t/stat) $(grep -E '^(voluntary|nonvoluntary)_ctxt' $t/status | awk '{print $2}' | tr '\n' ' ') $(tr ' ' '_' < $t/comm)"; done; done; }
flock /work/wt/bench.lock bash -c "
$(declare -f snap); PIDS='$PIDS'
uptime > $out.uptime
.venv/bin/python -m univrs.bench.client --endpoints $EPS --clients $clients --duration 2 --repeat 1 --no-check --json $out.warm.json > /dev/null 2>&1
snap > $out.before; mkdir -p $out.cpu/b; cp $out.cpu/*.json $out.cpu/b/
.venv/bin/python -m univrs.bench.client --endpoints $EPS --clients $clients --duration 6 --repeat 1 --no-check --json $out.json > $out.txt 2>&1 &
bp=\$!
if [ '$extra' = strace ]; then
  L=\$(python3 -c \"import json;i=json.load(open('$out.info.json'));w=json.load(open('$out.warm.json'))['univrs']['writes'];k=list(w)[0];print(i['pids'][w[k]['leaders'][0]])\")
  F=\$(python3 -c \"import json;i=json.load(open('$out.info.json'));w=json.load(open('$out.warm.json'))['univrs']['writes'];k=list(w)[0];print([p for n,p in i['pids'].items() if n!=w[k]['leaders'][0]][0])\")
  sleep 2; timeout -s INT 3 strace -c -f -p \$L -o $out.strace.leader & timeout -s INT 3 strace -c -f -p \$F -o $out.strace.follower; wait \$bp
elif [ '$extra' = spy ]; then
  L=\$(python3 -c \"import json;i=json.load(open('$out.info.json'));w=json.load(open('$out.warm.json'))['univrs']['writes'];k=list(w)[0];print(i['pids'][w[k]['leaders'][0]])\")
  sleep 1; .venv/bin/py-spy record -p \$L -d 4 -r 1000 -t -f raw -o $out.spy.leader.txt --nonblocking \$SPYOPT > /dev/null 2>&1 ; wait \$bp
else
  wait \$bp
fi
snap > $out.after; mkdir -p $out.cpu/a; cp $out.cpu/*.json $out.cpu/a/
uptime >> $out.uptime
"
touch $d/stop; wait $cp
