"""CPU-time (process_time) A/B of round 3's two changes in one process, medians of 9 rounds
(docs/performance.md, "Structural changes (round 3)").

Run: .venv/bin/python docs/perf/ab_round3.py
"""

import statistics
import time

from univrs.runtime.payload import (
    decode_own_payload,
    decode_payload,
    encode_payload,
    encode_payload_doc,
)
from univrs.runtime.watch import WatchHub
from univrs.sm.commands import CreateWorkload, Envelope, ScaleWorkload
from univrs.sm.model import WorkloadSpec
from univrs.sm.state import ClusterStateMachine


def cpu(f, n=4000):
    t = time.process_time()
    for _ in range(n):
        f()
    return (time.process_time() - t) / n * 1e6


env = Envelope(
    command=ScaleWorkload(id="bench-12", replicas=3), client_id="c-0123456789abcdef", seq=12345
)
data, doc = encode_payload_doc(env, 1_700_000_000_000)
sm = ClusterStateMachine()
hubs = {"old": WatchHub(), "new": WatchHub()}
sm.apply(
    Envelope(command=CreateWorkload(id="w1", spec=WorkloadSpec(name="w1", image="img"))),
    index=1,
    term=1,
    time_ms=1,
)
i = [2]


def scale():
    sm.apply(
        Envelope(command=ScaleWorkload(id="w1", replicas=i[0] % 5)), index=i[0], term=1, time_ms=1
    )
    i[0] += 1


cases = {
    "own: old (encode + decode)": lambda: (
        encode_payload(env, 1_700_000_000_000),
        decode_payload(data),
    ),
    "own: new (encode + doc)": lambda: (
        encode_payload_doc(env, 1_700_000_000_000),
        decode_own_payload(data, doc),
    ),
    "apply only": scale,
    "apply + last_events into hub (old)": lambda: (
        scale(),
        hubs["old"].applied(i[0] - 1, sm.last_events(), 60),
    ),
    "apply + last_changes into hub (new)": lambda: (
        scale(),
        hubs["new"].applied(i[0] - 1, sm.last_changes(), 60),
    ),
}
res = {k: [] for k in cases}
for _ in range(9):
    for k, f in cases.items():
        res[k].append(cpu(f))
for k, v in res.items():
    print(f"{k:40s} {statistics.median(v):6.1f} us CPU")
