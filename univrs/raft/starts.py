"""Start counters: telling a member's data dir from an older copy of it put back.

A member is an id and an incarnation (its data dir's), and the incarnation is *in* the data
dir: a VM snapshot rolled back or last night's ``cp -a`` put back keeps it, while its hard
state goes back (it may vote again in a term it voted in, and lack entries it acknowledged,
which a leader counted towards a commit). So each data dir also keeps a **start counter**,
bumped and made durable at every start before anything is sent (``univrs.storage.starts``),
together with the random **boot ids** of its last ``CHAIN`` starts, newest last. Every raft
hello names them (``Hello.start``: the counter and the chain).

Each node records durably, per (member id, incarnation), the newest start it accepted a
hello of: (counter, boot id) (``StartBook``, stored beside the pins). A hello is judged
against that record (``judge``):

* a counter below the record: an older copy started after a later start of the same data dir;
* a counter at or above it whose chain does not hold the recorded boot id at the recorded
  counter: a copy that forked from the data dir before the recorded start (the copy of a run
  restarted since: the same counter with another boot id, or a copy restarted a few times);
* a hello naming no start from an (id, incarnation) that did announce one: an older build
  running on an older copy (a VM snapshot from before the upgrade), or a downgrade;

are refused; a counter more than ``CHAIN - 1`` starts past the record cannot be checked (the
chain does not reach back to it) and is taken. What the design cannot see: a copy whose first
start after being put back is heard before any hello of a later start of the original (a copy
of the run in progress, put back in place of it), and a copy restarted ``CHAIN`` times without
reaching a peer that recorded the original's later start (docs/security.md).

Pure, in the core's layer beside the incarnations it refines (no trio, no storage, no
randomness: the storage draws boot ids). The transport persists the record before it lets a
connection's messages through (an accepted start must outlive a crash of the receiver, or the
copy would be taken after its restart).
"""

from __future__ import annotations

import re

import attrs

from univrs.raft.messages import NodeId

CHAIN = 16
"""How many boot ids (the newest starts') a data dir keeps and a hello names."""

MAX_COUNTER = 2**63 - 1
BOOT_RE = re.compile(r"[0-9a-f]{16}")

MAX_RECORDS_PER_ID = 4
"""Incarnations recorded per member id (the oldest recorded is forgotten past this): a
replaced member's old incarnations need no record, and hellos under a listed id cannot grow
the record without bound."""


@attrs.frozen
class Start:
    """A start of a data dir: its counter (1 for the first start) and the boot ids of its last
    starts, newest (this start's) last: ``boots[-1 - k]`` is the boot id of start
    ``counter - k``."""

    counter: int
    boots: tuple[str, ...]

    @property
    def boot(self) -> str:
        return self.boots[-1]

    def following(self, boot: str) -> Start:
        """The next start, with boot id ``boot``."""
        return Start(counter=self.counter + 1, boots=(*self.boots, boot)[-CHAIN:])

    def boot_at(self, counter: int) -> str | None:
        """The boot id of start ``counter`` if the chain reaches back to it, else None."""
        k = self.counter - counter
        if 0 <= k < len(self.boots):
            return self.boots[-1 - k]
        return None


def valid_start(start: Start) -> bool:
    """Whether ``start`` is one a hello may name."""
    return (
        1 <= start.counter <= MAX_COUNTER
        and 1 <= len(start.boots) <= min(CHAIN, start.counter)
        and all(BOOT_RE.fullmatch(b) for b in start.boots)
    )


# (member id, incarnation) -> (counter, boot id) of the newest start accepted.
Records = dict[tuple[NodeId, str], tuple[int, str]]


def judge(recorded: tuple[int, str] | None, start: Start | None) -> str | None:
    """Why a hello naming ``start`` (None: none) is an older copy of a data dir whose newest
    accepted start is ``recorded`` (None: none yet), or None if it is not."""
    if recorded is None:
        return None
    counter, boot = recorded
    if start is None:
        return (
            f"it named no start counter, but start {counter} of it did (an older build on an "
            "older copy of its data dir, or a downgrade)"
        )
    if start.counter < counter:
        return f"it is start {start.counter}, but start {counter} of its data dir was seen"
    seen = start.boot_at(counter)
    if seen is not None and seen != boot:
        return (
            f"its start {counter} was {boot}, not {seen}: it runs on a copy of its data dir "
            "taken before that start"
        )
    return None


@attrs.define(eq=False)
class StartBook:
    """The newest start accepted per (member id, incarnation): what ``judge`` checks hellos
    against. ``records()`` is what the store keeps."""

    _records: Records = attrs.field(factory=dict)

    def recorded(self, node: NodeId, incarnation: str) -> tuple[int, str] | None:
        return self._records.get((node, incarnation))

    def problem(self, node: NodeId, incarnation: str | None, start: Start | None) -> str | None:
        """Why ``start`` from ``node`` at ``incarnation`` is an older copy (None: it is not,
        or there is no incarnation to hold it to)."""
        if incarnation is None:
            return None
        return judge(self.recorded(node, incarnation), start)

    def maybe_record(
        self, node: NodeId, incarnation: str, start: Start, keep: str | None = None
    ) -> bool:
        """Record ``start`` if it is newer than the record; True if the record changed (the
        caller must make it durable before it takes the connection's messages). Past
        ``MAX_RECORDS_PER_ID`` incarnations of ``node`` the oldest recorded is forgotten, never
        ``keep`` (the one the configuration binds: hellos naming made-up incarnations must not
        push the member's own record out)."""
        key = (node, incarnation)
        old = self._records.get(key)
        if old is not None and (old[0] > start.counter or old == (start.counter, start.boot)):
            return False
        self._records.pop(key, None)
        self._records[key] = (start.counter, start.boot)
        mine = [k for k in self._records if k[0] == node and k[1] != keep]
        kept = 1 if (node, keep) in self._records else 0
        for k in mine[: max(0, len(mine) + kept - MAX_RECORDS_PER_ID)]:
            del self._records[k]
        return True

    def records(self) -> Records:
        return dict(self._records)

    def restore(self, records: Records) -> None:
        """Make ``records`` (an earlier ``records()``) the book again: a record that could not
        be made durable is forgotten."""
        self._records = dict(records)

    def newest(self, node: NodeId) -> tuple[str, int, str] | None:
        """(incarnation, counter, boot id) of the start of ``node`` recorded last (a hello's
        ``seen``), or None."""
        for (nid, incarnation), (counter, boot) in reversed(self._records.items()):
            if nid == node:
                return incarnation, counter, boot
        return None
