"""One log line per kind of message the core refused (issue 12: counted, logged once).

The core counts what it refuses by reason (``Status.refused``: a term above MAX_TERM, a sender
that is not a member, a snapshot too large or not restorable, an undecodable configuration
entry); the counts are in /metrics (``univrs_raft_refused_messages_total``) and /v1/node/status. A
hostile peer can make those counts grow as fast as it can send, so the log gets one WARNING
per reason, the first time it is seen, and nothing more: no per-message spam.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from univrs.raft.ready import Status

log = logging.getLogger("univrs.node")

_MEANING = {
    "term": "a term above 2^62 (no honest node gets there)",
    "stranger": "a sender that is not a member of this node's configuration",
    "incarnation": "a member id from another incarnation than the configuration binds",
    "snapshot_size": "a snapshot larger than raft.max_snapshot_bytes",
    "snapshot_data": "a snapshot the state machine cannot restore",
    "entry": "a configuration entry that does not decode",
}


async def log_refusals(
    status: Callable[[], Status], wait_changed: Callable[[], Awaitable[None]]
) -> None:
    """Log each refusal reason once, when it first shows in ``status()``; runs until cancelled."""
    seen: set[str] = set()
    while True:
        for reason, count in status().refused:
            if reason not in seen:
                seen.add(reason)
                log.warning(
                    "refused raft messages: %s (counted in /metrics "
                    "univrs_raft_refused_messages_total; logged once per reason)",
                    _MEANING.get(reason, reason),
                    extra={"reason": reason, "count": count},
                )
        with trio.move_on_after(1.0):
            await wait_changed()
