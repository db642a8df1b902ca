#!/usr/bin/env bash
# Round 21 (s21-goload), docs/performance.md: the bench's load generators interleaved, a fresh
# cluster per run, one run of each variant per round. Run from the repository's root:
#   docs/perf/goload/ab.sh [ROUNDS]
# Each run holds /tmp/univrs-bench.lock so that two benchmarks never share the machine.
set -euo pipefail
rounds=${1:-3}
run() {
    local name=$1; shift
    flock /tmp/univrs-bench.lock .venv/bin/python -m univrs.bench.client --clients 64,256 \
        --duration 5 --repeat 1 "$@" 2>&1 | grep -E "univrs writes, |by role" | sed "s/^/$name /"
}
for r in $(seq 1 "$rounds"); do
    echo "## round $r $(date +%H:%M) load $(cut -d' ' -f1-3 /proc/loadavg)"
    run python --loadgen python
    run go --loadgen go
    run go-nocheck --loadgen go --no-check
done
