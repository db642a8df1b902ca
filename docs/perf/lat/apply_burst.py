"""How long a synced LMDB write handed to a worker thread takes to return when the Trio loop
stays idle, against the loop running an apply-like Python burst (argv[1] seconds, then an
unsynced LMDB transaction) right after the hand-off and argv[2] seconds of other loop work, interleaved (Round 15, docs/performance.md)."""
import lmdb, os, queue, shutil, statistics, sys, threading, time, trio
d = "/tmp/univrs-apply-burst/log"; shutil.rmtree(os.path.dirname(d), ignore_errors=True); os.makedirs(d)
env = lmdb.open(d, map_size=1 << 28, sync=True, metasync=True)
sd = "/tmp/univrs-apply-burst/state"; os.makedirs(sd)
senv = lmdb.open(sd, map_size=1 << 28, sync=False, metasync=False)
jobs: queue.SimpleQueue = queue.SimpleQueue()
BURST = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0003
# Loop work between the hand-off and the loop's next poll (the rest of the driver's step).
GAP = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
def worker():
    i = 0
    while True:
        done = jobs.get()
        done[2] = time.perf_counter()  # the worker runs Python: it has the GIL
        with env.begin(write=True) as txn:
            txn.put(b"%08d" % i, b"x" * 300)
        i += 1
        done[1] = time.perf_counter()
        done[0].set()
threading.Thread(target=worker, daemon=True).start()
def apply_burst(n):
    # Python work like an apply: dict churn, then an unsynced LMDB state transaction
    end = time.perf_counter() + BURST
    x = {}
    while time.perf_counter() < end:
        for k in range(50): x[k] = (k, str(k))
    with senv.begin(write=True) as txn:
        txn.put(b"%08d" % n, b"s" * 200)
async def main():
    res = {True: [], False: []}
    starts = {True: [], False: []}
    for n in range(300):
        burst = n % 2 == 0
        box = [threading.Event(), 0.0, 0.0]
        t0 = time.perf_counter()
        jobs.put(box)
        end = time.perf_counter() + GAP
        while time.perf_counter() < end:
            pass
        await trio.lowlevel.checkpoint()
        if burst:
            apply_burst(n)
        await trio.to_thread.run_sync(box[0].wait)
        res[burst].append(box[1] - t0)
        starts[burst].append(box[2] - t0)
        await trio.sleep(0.001)
    for k, v in res.items():
        v.sort()
        s = sorted(starts[k])
        print(f"{'apply burst' if k else 'loop idle  '}: write started after median {statistics.median(s)*1e6:6.0f} us"
              f" p90 {s[int(len(s)*.9)]*1e6:6.0f} us; returned after median {statistics.median(v)*1e6:6.0f} us"
              f" p90 {v[int(len(v)*.9)]*1e6:6.0f} us")
trio.run(main)
