"""The API does not import the MCP SDK before it serves (``univrs.api.server.LazyMcp``): the
import costs seconds, which a restarting node would spend before serving a read."""

from __future__ import annotations

import subprocess
import sys

from univrs.api import mcp as mcp_api
from univrs.api import server


def test_the_api_module_does_not_import_the_mcp_sdk() -> None:
    """Fails on the code before (c7e206d): univrs.api.server imported univrs.api.mcp, and
    with it the SDK, at the top."""
    code = "import sys, univrs.api.server; print(sorted(m for m in sys.modules if m == 'mcp'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_lazy_endpoint_serves_the_mcp_path() -> None:
    assert server.MCP_PATH == mcp_api.PATH
