#!/bin/bash
cd ${SPYDIR:-/work/main}
OUT=/tmp/s27/pt; mkdir -p $OUT; rm -f $OUT/*
PYTHONPATH=${SPYDIR:-/work/main} /work/main/.venv/bin/python -m univrs.bench.client --clients 1 --duration 10 --repeat 1 --no-check > $OUT/bench.out 2>&1 &
B=$!
sleep 6
pids=""
for p in $(ps -o pid= --ppid $B); do a=$(ps -o args= -p $p); echo "$p $a" >> $OUT/pids; pids="$pids,$p"; done
pids=${pids#,}
timeout 2 perf trace -p $pids -e 'write,writev,sendto,sendmsg,read,recvfrom,recvmsg,fdatasync,pwrite64,epoll_wait' -o $OUT/trace.txt 2>/dev/null
wait $B
grep "run 1" $OUT/bench.out
