"""Packing proposals into log entries: one entry per command, or batch entries.

The driver hands the core one batch of proposals at a time (``propose_many``,
batching.py). Without batch entries each proposal is one entry. With them
(``Packing.enabled``, the node setting ``raft.batch_entries``), consecutive proposals are
packed into version-2 payloads (univrs/runtime/payload.py) of at most ``max_commands``
commands and about ``max_bytes`` bytes, so a write pays one ``Entry``, one encoding in
AppendEntries, one log put per node, one apply step and one ``PendingProposals`` slot per
*batch*. The order of the commands is the order of the proposals, so packing changes where
a command sits (its revision is the same as unpacked: univrs/sm/state.py), not what applies.

What stays a single version-1 entry: a lone proposal (a batch of one would only cost more),
and a proposal whose document does not round-trip exactly (``Propose.doc`` is None: it could
nest too deep inside a batch, see payload.py) or whose payload alone exceeds ``max_bytes``.
The bound keeps every batch entry far below the Raft transport's frame limit
(``max_payload_size``, 4 MiB by default: ``for_frames`` takes a quarter of it at most), since
an AppendEntries carries at least one entry whatever its size and a frame over the limit is
dropped: a batch must never make an entry that cannot be replicated out of entries that can.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from univrs.runtime.events import Propose, ProposeBatch
from univrs.runtime.payload import batch_payload

DEFAULT_MAX_COMMANDS = 256  # commands in one batch entry at most
DEFAULT_MAX_BYTES = 256 * 1024  # about this many payload bytes in one batch entry at most


@attrs.frozen(kw_only=True)
class Packing:
    """How the driver packs proposals into entries (see the module docstring)."""

    enabled: bool = False
    max_commands: int = DEFAULT_MAX_COMMANDS
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def for_frames(cls, *, enabled: bool, max_payload_size: int) -> Packing:
        """The node's packing: batch entries of at most a quarter of the transport's frame
        limit (and ``DEFAULT_MAX_BYTES``)."""
        return cls(enabled=enabled, max_bytes=min(DEFAULT_MAX_BYTES, max_payload_size // 4))

    def pack(
        self, proposals: Sequence[Propose], payloads: Sequence[bytes] | None = None
    ) -> list[Propose | ProposeBatch]:
        """The entries to append for ``proposals``, in order: each a single proposal or a
        batch of at least two. ``payloads``: their payloads, if the caller has them listed
        (``ProposalBatches.flush``)."""
        if not self.enabled or len(proposals) < 2:
            return list(proposals)
        max_commands, max_bytes = self.max_commands, self.max_bytes
        if len(proposals) <= max_commands:
            # All in one batch entry when they fit (every one has its document, and all their
            # bytes fit in one entry): what the loop below makes of them, built at once.
            if payloads is None:
                payloads = [p.payload for p in proposals]
            if sum(map(len, payloads)) <= max_bytes:
                docs = [p.doc for p in proposals]
                if None not in docs:
                    payload, doc = batch_payload(docs, payloads)  # type: ignore[arg-type]
                    return [ProposeBatch(payload=payload, doc=doc, proposals=tuple(proposals))]
        return self._pack_each(proposals)

    def _pack_each(self, proposals: Sequence[Propose]) -> list[Propose | ProposeBatch]:
        """``pack`` for two proposals or more, one at a time (the general path)."""
        max_commands, max_bytes = self.max_commands, self.max_bytes
        out: list[Propose | ProposeBatch] = []
        group: list[Propose] = []
        size = 0
        for p in proposals:
            n = len(p.payload)
            if p.doc is None or n > max_bytes:
                self._close(group, out)
                group, size = [], 0
                out.append(p)
                continue
            if group and (len(group) >= max_commands or size + n > max_bytes):
                self._close(group, out)
                group, size = [], 0
            group.append(p)
            size += n
        self._close(group, out)
        return out

    @staticmethod
    def _close(group: list[Propose], out: list[Propose | ProposeBatch]) -> None:
        if len(group) == 1:
            out.append(group[0])
        elif group:
            docs = [p.doc for p in group]
            payload, doc = batch_payload(docs, [p.payload for p in group])  # type: ignore[arg-type]
            out.append(ProposeBatch(payload=payload, doc=doc, proposals=tuple(group)))
