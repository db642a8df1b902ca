"""The consumers of the cluster state stay off the runtime internals (issue 15).

The REST API, the fast protocol, ``ApiService``, the operations' server halves, the watch
endpoints, the MCP server (both transports) and the reconciler reach the state only through
the ``StateStore`` interface (``univrs.sm.store``; ``univrs.api.store.RaftStateStore`` is the
node's one implementation) and the service interfaces (``univrs.service``): none of them
imports the runtime, the Raft core, the storage, the transport or the server. (The store
itself, ``univrs.api.store``, is where the runtime is used.) Imports are read from the source,
lazy and ``TYPE_CHECKING`` ones included.
"""

from __future__ import annotations

import pathlib

import pytest

from tests.test_layers import ROOT, imports_of

CONSUMERS = [
    "api/rest.py",
    "api/fast.py",
    "api/ops.py",
    "api/opargs.py",
    "api/service.py",
    "api/frame_reads.py",
    "api/watch.py",
    "api/mcp.py",
    "service/reconcile.py",
    "service/memory.py",
]
if (ROOT / "mcp").exists():
    CONSUMERS += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "mcp").rglob("*.py"))]
INTERNALS = ("univrs.runtime", "univrs.raft", "univrs.storage", "univrs.server", "univrs.net.")
# host:port parsing, no I/O; websocket frames written and taken with fewer scheduling rounds
# (a helper over trio-websocket's connection, shared by the raft links, the API and the
# client: it holds no state of the node and reaches nothing of the runtime); and the frame
# parsing under it (wsfast: complete frames without wsproto's machinery, and the bound on a
# fragmented message's parts, installed on a client connection at accept since session 26).
ALLOWED = {"univrs.net.address", "univrs.net.wsdirect", "univrs.net.wsfast"}


@pytest.mark.parametrize("module", CONSUMERS)
def test_consumers_use_the_state_store_not_the_runtime(module: str) -> None:
    path = ROOT / module
    bad = sorted(
        name
        for name in imports_of(path, ROOT)
        if name not in ALLOWED and name.startswith(INTERNALS)
    )
    assert bad == [], f"{module} imports runtime internals: {bad}"


def test_the_check_sees_an_internal_import(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "univrs"
    (root / "runtime").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "runtime" / "__init__.py").write_text("")
    (root / "runtime" / "driver.py").write_text("")
    consumer = root / "consumer.py"
    consumer.write_text("from univrs.runtime.driver import RaftRuntime\n")
    assert "univrs.runtime.driver" in imports_of(consumer, root)
