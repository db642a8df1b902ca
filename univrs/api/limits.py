"""Bounds on what one client may make a node do (docs/security.md, "Limits").

* ``read_body``, ``check_depth``: a request body is streamed and refused (``PayloadTooLarge``,
  413) as soon as it passes ``max_body_bytes``, so an oversized body costs at most the limit of
  memory; JSON nested deeper than ``max_json_depth`` is refused (``MalformedRequest``, 400)
  *before* it is parsed (the parser recurses).
* ``RateLimiter``: a token bucket per caller (token id, or address without auth); used for
  ``session.open``. Its table of buckets is bounded: full buckets are forgotten first.
* ``ConnectionLimiter``: open connections per client address on a listener; one beyond the
  bound is refused (closed at once), and logged once per address until it is under again.
* ``Quota``: the storage in use against ``quota_backend_bytes`` (etcd's quota): above it the
  NOSPACE alarm is raised and writes that do not free space are refused with ``no-space``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import attrs

from univrs.errors import MalformedRequest, PayloadTooLarge, RateLimited

if TYPE_CHECKING:
    from univrs.storage import LogStore

log = logging.getLogger("univrs.api")

MAX_BUCKETS = 100_000
QUOTA_RECHECK = 0.5  # seconds a storage measurement is reused


async def read_body(stream: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body of ``stream``, refused with ``PayloadTooLarge`` as soon as it passes
    ``limit`` bytes (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_depth(raw: bytes, limit: int) -> None:
    """Refuse JSON nested deeper than ``limit`` (arrays and objects), counted on the raw text
    without parsing it (brackets inside strings are skipped)."""
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                raise MalformedRequest(f"the request body is nested deeper than {limit} levels")
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1


@attrs.define(eq=False)
class RateLimiter:
    """Token buckets per key: ``rate`` per second, at most ``burst`` saved up."""

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = attrs.field(factory=dict)  # key -> (level, at)

    def take(self, key: str, what: str) -> None:
        """Spend one unit of ``key``'s bucket, or raise ``RateLimited`` (nothing spent)."""
        now = self.clock()
        level, at = self._buckets.get(key, (float(self.burst), now))
        level = min(float(self.burst), level + (now - at) * self.rate)
        if level < 1.0:
            self._buckets[key] = (level, now)
            wait = (1.0 - level) / self.rate
            raise RateLimited(
                f"too many {what} from {key} (at most {self.rate:g}/s, bursts of {self.burst}); "
                f"retry in {wait:.2f}s",
                retry_after=wait,
            )
        self._buckets.pop(key, None)  # re-inserted last: the dict is in least-recent order
        self._buckets[key] = (level - 1.0, now)
        if len(self._buckets) > MAX_BUCKETS:
            del self._buckets[next(iter(self._buckets))]  # least recently used: about full


@attrs.define(eq=False)
class ConnectionLimiter:
    """Open connections per client address on one listener (see the module docstring)."""

    limit: int
    listener: str  # for the log line: "REST" or "fast protocol"
    _open: dict[str, int] = attrs.field(factory=dict)
    _warned: set[str] = attrs.field(factory=set)
    refused: int = 0

    def acquire(self, address: str) -> bool:
        """Count one more connection from ``address``; False (refuse it) beyond the limit."""
        count = self._open.get(address, 0)
        if count >= self.limit:
            self.refused += 1
            if address not in self._warned:
                self._warned.add(address)
                log.warning(
                    "refusing %s connections from %s: it has %d open (limits."
                    "max_connections_per_address)",
                    self.listener,
                    address,
                    count,
                )
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count <= 0:
            self._open.pop(address, None)
            self._warned.discard(address)
        else:
            self._open[address] = count

    def open_from(self, address: str) -> int:
        return self._open.get(address, 0)


@attrs.define(eq=False)
class Quota:
    """The storage quota (etcd's ``quota-backend-bytes``): the bytes the store's databases use
    (``db_in_use_bytes``; free pages left by compaction do not count) against ``limit``."""

    storage: LogStore
    limit: int
    clock: Callable[[], float] = time.monotonic
    _checked_at: float = -1e18
    _in_use: int = 0
    _raised: bool = False

    def in_use(self) -> int:
        """Bytes the store's databases use (measured at most every ``QUOTA_RECHECK`` s)."""
        now = self.clock()
        if now - self._checked_at >= QUOTA_RECHECK:
            self._in_use = self.storage.statistics().db_in_use_bytes
            self._checked_at = now
            raised = self._in_use > self.limit
            if raised != self._raised:
                self._raised = raised
                log.warning(
                    "NOSPACE alarm %s: %d bytes of storage in use, quota %d "
                    "(limits.quota_backend_bytes)",
                    "raised: writes are refused" if raised else "cleared",
                    self._in_use,
                    self.limit,
                )
        return self._in_use

    @property
    def alarm(self) -> bool:
        """True while the NOSPACE alarm is raised."""
        return self.in_use() > self.limit

    def alarms(self) -> list[dict[str, Any]]:
        """The raised alarms, as ``/v1/node/status`` shows them (empty: none)."""
        if not self.alarm:
            return []
        return [{"alarm": "NOSPACE", "in_use_bytes": self._in_use, "quota_bytes": self.limit}]
