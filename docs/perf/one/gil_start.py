"""A thread woken from a queue.SimpleQueue while the main thread runs Python for BUSY_US, then
waits: how long until the thread runs (docs/performance.md, Round 20, s20-one).

    python3 docs/perf/one/gil_start.py SWITCH_INTERVAL_S BUSY_US
"""
import threading, queue, time, sys, statistics
si = float(sys.argv[1]); busy_us = float(sys.argv[2])
sys.setswitchinterval(si)
q = queue.SimpleQueue(); started = []
def worker():
    while True:
        t = q.get()
        if t is None: return
        started.append(time.perf_counter_ns() - t)
th = threading.Thread(target=worker, daemon=True); th.start()
lat = []
for i in range(300):
    started.clear()
    q.put(time.perf_counter_ns())
    end = time.perf_counter() + busy_us / 1e6
    while time.perf_counter() < end: pass   # the rest of the driver's step (apply etc.)
    while not started: time.sleep(0.0005)
    lat.append(started[0] / 1e3)
lat.sort()
print(f"switchinterval {si*1e6:.0f}us busy {busy_us:.0f}us: worker start median {statistics.median(lat):.0f}us p90 {lat[270]:.0f}")
q.put(None)
