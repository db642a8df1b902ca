# Per task-step CPU of the trio thread (time.thread_time), by task name; plus CPU in io waits
# and in the scheduler between. Dumped to $LAT_CPU_DIR/PID.json every 0.3 s (cumulative).
import os

_DIR = os.environ.get("LAT_CPU_DIR")
if _DIR:
    import collections
    import json
    import sys
    import threading
    import time

    import trio

    tt = time.thread_time

    class _Cpu(trio.abc.Instrument):
        def __init__(self):
            self.cpu = collections.Counter()
            self.n = collections.Counter()
            self.t0 = None
            self.io = 0.0
            self.ion = 0
            self.sched = 0.0
            self.last = None

        def before_task_step(self, task):
            t = tt()
            if self.last is not None:
                self.sched += t - self.last
            self.t0 = t

        def after_task_step(self, task):
            t = tt()
            nm = task.name
            if nm.endswith("_drive") or nm.endswith("_reader_task") or "sync_soon" in nm:
                ks = "+".join(sorted(_EV)) if _EV else "-"
                nm = nm[-12:] + "[" + ks + "]"
            _EV.clear()
            self.cpu[nm] += t - self.t0
            self.n[nm] += 1
            self.last = t

        def before_io_wait(self, timeout):
            t = tt()
            if self.last is not None:
                self.sched += t - self.last
            self.t0 = t

        def after_io_wait(self, timeout):
            t = tt()
            self.io += t - self.t0
            self.ion += 1
            self.last = t

    _EV = set()
    _c = _Cpu()
    import univrs.net.wsdirect as _wd

    _os = _wd.FrameTap.send

    async def _send(self, message):
        q = getattr(self.take, "__qualname__", "?").split(".")[0]
        _EV.add(q[:18] + ":" + str(len(message) // 100 * 100))
        return await _os(self, message)

    _wd.FrameTap.send = _send
    import univrs.runtime.step as _st

    _oh = _st.StepLoop._handle

    def _h(self, ev):
        n = type(ev).__name__
        if n == "_Wake":
            n = "WAKE"
        elif n == "object":
            n = "TICK?"
        _EV.add(n)
        return _oh(self, ev)

    _st.StepLoop._handle = _h
    _ot = _st.StepLoop._take_persisted

    def _tp(self):
        if self._persisted:
            _EV.add("persisted")
        return _ot(self)

    _st.StepLoop._take_persisted = _tp
    _oa = _st.StepLoop.apply_committed

    def _ac(self, e):
        _EV.add("apply")
        return _oa(self, e)

    _st.StepLoop.apply_committed = _ac

    _orig = trio.run

    def _run(*a, **kw):
        kw["instruments"] = list(kw.get("instruments", ())) + [_c]
        return _orig(*a, **kw)

    trio.run = _run

    def _dump():
        path = os.path.join(_DIR, f"{os.getpid()}.json")
        while True:
            time.sleep(0.3)
            doc = {
                "argv": sys.argv,
                "cpu": dict(_c.cpu),
                "n": dict(_c.n),
                "io": _c.io,
                "ion": _c.ion,
                "sched": _c.sched,
                "proc": time.process_time(),
            }
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, path)

    threading.Thread(target=_dump, daemon=True).start()
