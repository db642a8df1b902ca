"""What the cluster bench (``univrs.bench.scale_cluster``) reads off the node processes, and
the clock every one of its waits draws from.

A node is read from outside only, as an operator would: its REST API (``http``, ``status``
through ``NodeProc.status``, ``linearizable_read``), its structured one-line log
(``log_field``, ``log_lines``) and ``/proc/<pid>/status`` (``vm_status``). ``Budget`` is the
time left for a whole run: every wait takes its deadline from it, and a spent budget raises
``OutOfBudget`` (the run then reports the figures so far).
"""

from __future__ import annotations

import datetime
import json
import pathlib
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from univrs.tools.devcluster import LocalCluster, NodeProc, wait_for

__all__ = [
    "Budget",
    "OutOfBudget",
    "highest_term",
    "http",
    "linearizable_read",
    "log_field",
    "log_lines",
    "vm_status",
    "wait_leader",
]

T = TypeVar("T")


class OutOfBudget(TimeoutError):
    """The run's time budget is spent."""


@attrs.define
class Budget:
    """The time left for a whole run: every wait takes its deadline from it."""

    seconds: float
    started: float = attrs.field(factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def timeout(self, cap: float, what: str) -> float:
        """``cap`` seconds, or what is left if less; ``OutOfBudget`` when nothing is left."""
        left = self.left()
        if left <= 0:
            raise OutOfBudget(f"the budget of {self.seconds:g} s was spent before {what}")
        return min(cap, left)

    def wait(self, cap: float, what: str, probe: Callable[[], T | None]) -> T:
        """Poll ``probe`` every 20 ms until it answers (truthy), for at most ``timeout(cap)``."""
        return wait_for(probe, self.timeout(cap, what), what, every=0.02)


def wait_leader(cluster: LocalCluster, among: list[NodeProc], clock: Budget) -> NodeProc:
    """The node ``among`` agree leads (``LocalCluster.leader``), waited for up to 120 s."""
    return wait_for(lambda: cluster.leader(among), clock.timeout(120, "a leader"), "a leader")


def vm_status(pid: int | None, field: str) -> int | None:
    """A process's ``VmHWM`` (peak resident set) or ``VmRSS`` in bytes, None if unreadable."""
    if pid is None:
        return None
    try:
        text = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None


def http(node: NodeProc, method: str, path: str, timeout: float) -> tuple[int, Any]:
    """(status, JSON body) of one request to ``node``'s REST API; (0, reason) when it does
    not answer."""
    request = urllib.request.Request(
        f"http://{node.api_addr}{path}",
        method=method,
        data=b"{}" if method == "POST" else None,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.load(exc)
        except ValueError:
            return exc.code, None
    except (OSError, ValueError) as exc:
        return 0, str(exc)


def highest_term(nodes: list[NodeProc]) -> int:
    """The highest term the ``nodes`` report (0 for one that does not answer)."""
    return max(int((node.status() or {}).get("term", 0)) for node in nodes)


def linearizable_read(node: NodeProc, ident: str) -> bool:
    """Does ``node`` itself serve a linearizable read of workload ``ident`` now?"""
    code, body = http(node, "GET", f"/v1/workloads/{ident}?consistency=linearizable", 2.0)
    return code == 200 and isinstance(body, dict) and body.get("id") == ident


def log_field(node: NodeProc, event: str, field: str) -> Any:
    """``field`` of the last ``event`` line of the node's log (the structured one-line logs)."""
    try:
        text = node.log_path.read_text(errors="replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        if f'"{event}"' in line or f"msg={event}" in line or event in line:
            try:
                doc = json.loads(line[line.index("{") :])
                if isinstance(doc, dict) and field in doc:
                    return doc[field]
            except ValueError:
                pass
            m = re.search(rf"\b{field}=([^\s,]+)", line)
            if m:
                return m.group(1)
    return None


def log_lines(node: NodeProc, text: str, since: float = 0.0) -> list[tuple[float, str]]:
    """(time, line) of every line of the node's log that contains ``text``, written at or
    after ``since`` (epoch seconds; the line's own UTC timestamp)."""
    try:
        lines = node.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        if text not in line:
            continue
        try:
            when = datetime.datetime.fromisoformat(line[:23]).replace(tzinfo=datetime.UTC)
        except ValueError:
            continue
        if when.timestamp() >= since:
            found.append((when.timestamp(), line))
    return found
