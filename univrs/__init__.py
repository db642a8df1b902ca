"""univrs: the replicated, durable cluster state of the Univrs container orchestrator."""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("UNIVRS_COMPILED", "") not in ("", "0"):
    # Opt-in: the mypyc build of scripts/compile, checked against the sources (compiled.py).
    from univrs import compiled as _compiled

    _compiled.install(_compiled.requested() or _compiled.DEFAULT_DIR)
