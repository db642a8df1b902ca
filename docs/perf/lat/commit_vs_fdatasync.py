"""A synced LMDB commit (sync and metasync on, as univrs/storage/env.py opens the log) against
one append to a plain file and one fdatasync, interleaved, 300 each: what a log of its own with
one flush per group commit could save on every node's write (Round 15, docs/performance.md)."""
import lmdb, os, time, shutil, statistics
d = "/tmp/univrs-commit-bench/env"; shutil.rmtree(os.path.dirname(d), ignore_errors=True); os.makedirs(d)
env = lmdb.open(d, map_size=1<<28, sync=True, metasync=True)
f = os.open("/tmp/univrs-commit-bench/wal", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
a, b = [], []
for i in range(300):
    t = time.perf_counter()
    with env.begin(write=True) as txn: txn.put(b"%08d" % i, b"x" * 300)
    a.append(time.perf_counter() - t)
    t = time.perf_counter()
    os.write(f, b"x" * 300); os.fdatasync(f)
    b.append(time.perf_counter() - t)
print("lmdb commit median %.3f ms, append+fdatasync median %.3f ms" % (statistics.median(a)*1e3, statistics.median(b)*1e3))
