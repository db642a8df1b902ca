"""A node's start does not import the MCP SDK (docs/state-at-scale.md, s14-page): it was more
than half of the CPU a start spends importing, before the first read is served; the endpoint
imports it at its first request (``univrs.api.server.LazyMcp``), once, however many requests
come at once."""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from univrs.api import server


def test_the_modules_a_node_imports_before_it_serves_leave_the_mcp_sdk_out() -> None:
    """``settle`` imports what a node process imports before it serves (``NODE_MODULES``).
    Fails on the code before s14-page: ``univrs.api.server`` imported ``univrs.api.mcp``."""
    code = (
        "import sys\n"
        "from univrs.server.heap import NODE_MODULES, settle\n"
        "settle()\n"
        "assert 'univrs.api.server' in NODE_MODULES\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'pydantic')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


async def test_the_first_requests_start_one_endpoint_and_all_are_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[Any] = []
    served: list[int] = []
    running: list[str] = []

    class Endpoint:
        def __init__(self, service: Any) -> None:
            built.append(service)

        @contextlib.asynccontextmanager
        async def running(self) -> AsyncIterator[None]:
            running.append("up")
            try:
                yield
            finally:
                running.append("down")

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            served.append(scope["n"])

    fake = types.SimpleNamespace(PATH=server.MCP_PATH, McpEndpoint=Endpoint)
    imported: list[str] = []

    def import_module(name: str) -> Any:
        imported.append(name)
        return fake

    monkeypatch.setattr(importlib, "import_module", import_module)
    async with trio.open_nursery() as nursery:
        lazy: Any = server.LazyMcp("service", nursery)  # type: ignore[arg-type]
        assert lazy.endpoint is None and not imported  # nothing until a request
        async with trio.open_nursery() as requests:
            for n in range(3):
                requests.start_soon(lazy, {"n": n}, None, None)
        await lazy({"n": 3}, None, None)
        assert imported == ["univrs.api.mcp"] and built == ["service"]
        assert sorted(served) == [0, 1, 2, 3] and running == ["up"]
        nursery.cancel_scope.cancel()
    assert running == ["up", "down"]
