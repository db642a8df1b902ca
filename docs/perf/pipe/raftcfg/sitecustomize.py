# Round 19 (s19-pipe): extra [raft] lines ($PIPE_RAFT, ";" between lines) for the local
# clusters the bench starts itself (so its CPU per process figures stay), e.g.
# PIPE_RAFT="batch_gather_ms = 0" PYTHONPATH=docs/perf/pipe/raftcfg python -m univrs.bench.client ...
import os

_EXTRA = os.environ.get("PIPE_RAFT", "").replace(";", "\n")
if _EXTRA:
    import sys

    class _Finder:
        def find_spec(self, name, path, target=None):
            if name != "univrs.tools.devcluster":
                return None
            import importlib.machinery

            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            ex = spec.loader.exec_module

            def exec_module(module):
                ex(module)
                orig = module.LocalCluster.with_free_ports.__func__

                def wfp(cls, *a, extra_config="", **k):
                    return orig(cls, *a, extra_config=(extra_config + "\n" + _EXTRA).strip(), **k)

                module.LocalCluster.with_free_ports = classmethod(wfp)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Finder())

# Experiments (never kept as code: Round 19's A/B), in the node processes:
# PIPE_EXP=lazy: every commit notice waits for the next append or tick (followers apply a
#   batch when the next one arrives, during their own write);
# PIPE_EXP=hold: a leader holds each commit notice until it applied that commit itself, and
#   sends it from the step that takes the apply's report (followers apply
#   while the client works, not beside the leader's apply and answers).
_EXP = os.environ.get("PIPE_EXP", "")
if _EXP:
    import sys

    def _patch_model(m):
        if _EXP == "lazy":
            m.LAZY_COMMIT_NOTICE_BYTES = 1 << 40

    def _patch_step(m):
        if _EXP != "hold":
            return
        from univrs.raft.messages import COMMIT_NOTICE_CTX, Heartbeat
        from univrs.runtime.events import Applied

        held = []
        send, handle = m.StepLoop.send, m.StepLoop._handle

        def s(self, msg):
            if (
                type(msg) is Heartbeat
                and msg.ctx == COMMIT_NOTICE_CTX
                and msg.commit > self._applier.applied_index
            ):
                held.append(msg)
                return
            send(self, msg)

        def h(self, ev):
            handle(self, ev)
            if held and type(ev) is Applied:
                out = list(held)
                held.clear()
                for msg in out:
                    send(self, msg)

        m.StepLoop.send, m.StepLoop._handle = s, h

    _EXPS = {"univrs.config.model": _patch_model, "univrs.runtime.step": _patch_step}

    class _ExpFinder:
        def find_spec(self, name, path, target=None):
            if name not in _EXPS:
                return None
            import importlib.machinery

            spec = importlib.machinery.PathFinder.find_spec(name, path)
            patch, ex = _EXPS.pop(name), spec.loader.exec_module

            def exec_module(module):
                ex(module)
                patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _ExpFinder())
