# Temporary tracing for issue 14 (latency helper): counts trio task steps per task name and,
# when DIR/go appears, records (monotonic time, task name) of every task step for 0.5 s
# (LAT_TRACE_SECONDS: another window, e.g. 3 on a loaded machine for more writes in it).
import os
_DIR = os.environ.get("LAT_TRACE_DIR")
if _DIR:
    import collections, json, sys, threading, time
    import trio

    class _Tracer(trio.abc.Instrument):
        def __init__(self):
            self.steps = collections.Counter()
            self.io_waits = 0
            self.recording = False
            self.events = []

        def before_task_step(self, task):
            self.steps[task.name] += 1
            if self.recording:
                self.events.append((time.monotonic(), "step", task.name))

        def before_io_wait(self, timeout):
            self.io_waits += 1
            if self.recording:
                self.events.append((time.monotonic(), "io_wait", ""))

        def after_io_wait(self, timeout):
            if self.recording:
                self.events.append((time.monotonic(), "io_done", ""))

    _tracer = _Tracer()
    _orig = trio.run

    def _run(*a, **kw):
        kw["instruments"] = list(kw.get("instruments", ())) + [_tracer]
        return _orig(*a, **kw)

    trio.run = _run

    def _dump():
        done = False
        path = os.path.join(_DIR, f"{os.getpid()}.json")
        while True:
            time.sleep(0.2)
            if not done and os.path.exists(os.path.join(_DIR, "go")):
                _tracer.recording = True
                time.sleep(float(os.environ.get("LAT_TRACE_SECONDS", "0.5")))
                _tracer.recording = False
                done = True
            doc = {"argv": sys.argv, "steps": dict(_tracer.steps), "io_waits": _tracer.io_waits,
                   "cpu": time.process_time(), "t": time.monotonic(),
                   "events": _tracer.events if done else []}
            with open(path + ".tmp", "w") as f:
                json.dump(doc, f)
            os.replace(path + ".tmp", path)

    threading.Thread(target=_dump, daemon=True).start()
