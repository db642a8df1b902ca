# Round 19 (s19-pipe): markers for one batch cycle at 64 clients, in every process (nodes and
# the bench client), on CLOCK_MONOTONIC (the clock `perf sched record -k CLOCK_MONOTONIC`
# stamps the scheduler's switches with). Loaded with PYTHONPATH=docs/perf/pipe; records from
# when $PIPE_DIR/go exists for $PIPE_SECONDS (1), then writes $PIPE_DIR/PID.json.
import os

_DIR = os.environ.get("PIPE_DIR")
if _DIR:
    import json
    import sys
    import threading
    import time

    _ns = time.monotonic_ns
    _ev = []
    _on = [False]
    _gid = threading.get_native_id

    def mark(kind, n=0):
        if _on[0]:
            _ev.append((_ns(), _gid(), kind, n))

    def _dump():
        path = os.path.join(_DIR, f"{os.getpid()}.json")
        while not os.path.exists(os.path.join(_DIR, "go")):
            time.sleep(0.05)
        _on[0] = True
        time.sleep(float(os.environ.get("PIPE_SECONDS", "1")))
        _on[0] = False
        with open(path + ".tmp", "w") as f:
            json.dump({"argv": sys.argv, "pid": os.getpid(), "events": _ev}, f)
        os.replace(path + ".tmp", path)

    threading.Thread(target=_dump, daemon=True).start()

    class _Finder:
        """Patch modules as they are imported (the nodes import them late)."""

        def find_spec(self, name, path, target=None):
            if name not in _PATCH:
                return None
            import importlib.machinery

            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return None
            patch, ex = _PATCH.pop(name), spec.loader.exec_module

            def exec_module(module):
                ex(module)
                patch(module)

            spec.loader.exec_module = exec_module
            return spec

    def _p_wsdirect(m):
        send = m.FrameTap.send

        async def s(self, message):
            q = getattr(self.take, "__qualname__", "?")
            mark("rx:" + q.split(".")[0], len(message))
            return await send(self, message)

        m.FrameTap.send = s

    def _p_wire(m):
        wn = m.Wire.write_now

        def w(self, message):
            mark("tx", len(message))
            return wn(self, message)

        m.Wire.write_now = w

    def _p_writer(m):
        cap = m._capture

        def c(fn):
            mark("fs0")
            r = cap(fn)
            mark("fs1")
            return r

        m._capture = c

    def _p_batching(m):
        fl = m.ProposalBatches.flush

        def f(self, *a, **k):
            b = self.proposals
            r = fl(self, *a, **k)
            if self.proposals != b:
                mark("prop", self.proposals - b)
            return r

        m.ProposalBatches.flush = f
        ap = m.ProposalBatches.applied

        def a(self, index, now=0.0):
            r0 = self.released
            r = ap(self, index, now)
            if self.released and not r0:
                mark("rel", index)
            return r

        m.ProposalBatches.applied = a

    def _p_applier(m):
        one = m.Applier._apply_one

        enq = m.Applier.enqueue

        def en(self, entries):
            mark("enq", len(entries))
            return enq(self, entries)

        m.Applier.enqueue = en

        def a(self, entry):
            mark("a0", len(entry.data))
            r = one(self, entry)
            mark("a1", r)
            return r

        m.Applier._apply_one = a

    def _p_inline(m):
        st = m.InlineFrames.settle

        def s(self, *a, **k):
            mark("st0")
            r = st(self, *a, **k)
            mark("st1")
            return r

        m.InlineFrames.settle = s

    def _p_smstore(m):
        import contextlib

        orig = m.LmdbObjects._batch if hasattr(m, "LmdbObjects") else None
        for name in dir(m):
            c = getattr(m, name)
            if isinstance(c, type) and "_batch" in c.__dict__:
                orig = c.__dict__["_batch"]

                @contextlib.contextmanager
                def b(self, _o=orig):
                    cm = _o(self)
                    cm.__enter__()
                    try:
                        yield
                    except BaseException:
                        if not cm.__exit__(*sys.exc_info()):
                            raise
                        return
                    mark("c0")
                    cm.__exit__(None, None, None)
                    mark("c1")

                c._batch = b

    def _p_step(m):
        h = m.StepLoop._handle

        def hh(self, ev):
            mark("h0:" + type(ev).__name__)
            r = h(self, ev)
            mark("h1")
            return r

        m.StepLoop._handle = hh
        pr = m.StepLoop._process_ready

        def pp(self):
            mark("pr0")
            r = pr(self)
            mark("pr1")
            return r

        m.StepLoop._process_ready = pp

    _PATCH = {
        "univrs.runtime.step": _p_step,
        "univrs.storage.sm_store": _p_smstore,
        "univrs.net.wsdirect": _p_wsdirect,
        "univrs.client.wire": _p_wire,
        "univrs.runtime.writer": _p_writer,
        "univrs.runtime.batching": _p_batching,
        "univrs.runtime.applier": _p_applier,
        "univrs.api.inline": _p_inline,
    }
    sys.meta_path.insert(0, _Finder())

# The experiments of raftcfg/sitecustomize.py (PIPE_EXP, PIPE_RAFT) in a marked run too.
if os.environ.get("PIPE_EXP") or os.environ.get("PIPE_RAFT"):
    _here = os.path.dirname(os.path.abspath(__file__))
    exec(open(os.path.join(_here, "raftcfg", "sitecustomize.py")).read())
