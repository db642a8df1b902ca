"""How long the loop's next two scheduling rounds and a socket send take right after a synced
LMDB write is handed to a worker thread, against the same without the write (interleaved)."""
import lmdb, os, queue, shutil, statistics, sys, threading, time, trio
d = "/tmp/univrs-gil-steal"; shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
env = lmdb.open(d, map_size=1 << 28, sync=True, metasync=True)
jobs: queue.SimpleQueue = queue.SimpleQueue()
def worker():
    i = 0
    while True:
        done = jobs.get()
        with env.begin(write=True) as txn:
            for k in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
                txn.put(b"%08d-%d" % (i, k), b"x" * 300)
        i += 1
        done.set()
threading.Thread(target=worker, daemon=True).start()
async def main():
    a, b = trio.socket.socketpair()
    res = {True: [], False: []}
    for n in range(400):
        with_write = n % 2 == 0
        ev = threading.Event()
        t0 = time.perf_counter()
        if with_write:
            jobs.put(ev)
        await trio.lowlevel.checkpoint()  # the pump's wake-up round
        await trio.lowlevel.checkpoint()  # the send lock's round
        await a.send(b"y" * 200)
        res[with_write].append(time.perf_counter() - t0)
        await b.recv(4096)
        if with_write:
            await trio.to_thread.run_sync(ev.wait)
        await trio.sleep(0.001)
    for k, v in res.items():
        v.sort()
        print(f"{'with a write' if k else 'no write    '}: median {statistics.median(v)*1e6:6.0f} us  p90 {v[int(len(v)*.9)]*1e6:6.0f} us")
trio.run(main)
