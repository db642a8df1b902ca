"""Latency probe (issue 14, s17-lat1): copied to univrs/_probe.py only while measuring (README.md)."""
import os, time, threading, json, sys
_DIR = os.environ.get("LAT_PROBE_DIR")
_ev: list = []
_on = False
_ns = time.monotonic_ns

def mark(name, extra=None):
    if _on:
        _ev.append((_ns(), name, threading.get_ident() == _main, extra))

_main = threading.main_thread().ident

if _DIR:
    def _dump():
        global _on
        path = os.path.join(_DIR, f"{os.getpid()}.json")
        while not os.path.exists(os.path.join(_DIR, "go")):
            time.sleep(0.1)
        _on = True
        time.sleep(float(os.environ.get("LAT_PROBE_SECONDS", "2")))
        _on = False
        with open(path + ".tmp", "w") as f:
            json.dump({"argv": sys.argv, "events": _ev}, f)
        os.replace(path + ".tmp", path)
    threading.Thread(target=_dump, daemon=True).start()
