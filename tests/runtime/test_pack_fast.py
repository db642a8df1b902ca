"""The leader's batch building (session 30, slice he): ``Packing.pack``'s one-entry fast path
makes what its general path makes, ``batch_payload`` what its reference (the code before the
change) makes, and ``any_owned`` answers as ``is_owned`` on each, over random proposals; and
(session 31) ``ProposalBatches.flush``, which lists the payloads once for the owner check and
the packing, proposes what its reference (the code before) proposes."""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from typing import Any

from univrs import codec
from univrs.runtime import batching
from univrs.runtime.batching import ProposalBatches
from univrs.runtime.events import Propose, ProposeBatch
from univrs.runtime.packing import Packing
from univrs.runtime.payload import (
    OWNER_VERSION,
    PAYLOAD_VERSION,
    any_owned,
    batch_payload,
    encode_payload_doc,
    is_owned,
    without_owner,
)
from univrs.runtime.waiter import Waiter
from univrs.sm import CreateWorkload, Envelope, WorkloadSpec


def _reference_batch_payload(docs: Sequence[list[Any]], payloads: Sequence[bytes]) -> Any:
    """``batch_payload`` as it was before session 30 (one head per version and time)."""
    time_ms = max(doc[1] for doc in docs)
    owned = any(doc[0] == OWNER_VERSION for doc in docs)
    version = OWNER_VERSION if owned else 2
    n = len(payloads)
    head = bytes([0x80 + n]) if n < 24 else bytes([0x98, n]) if n < 0x100 else None
    assert head is not None
    parts = [b"\x83" + bytes([version]), codec.encode_plain(time_ms), head]
    envelopes: list[Any] = []
    for doc, payload in zip(docs, payloads, strict=True):
        if doc[0] == OWNER_VERSION:
            single = b"\x83\x03" + codec.encode_plain(doc[1]) + b"\x81"
        else:
            assert doc[0] == PAYLOAD_VERSION
            single = b"\x83\x01" + codec.encode_plain(doc[1])
        assert payload.startswith(single)
        parts.append(payload[len(single) :])
        envelopes.append(doc[2][0] if doc[0] == OWNER_VERSION else doc[2])
    return b"".join(parts), [version, time_ms, envelopes]


def _proposals(rng: random.Random, n: int, *, docless: float = 0.0) -> list[Propose]:
    out = []
    for i in range(n):
        owner = "token:o" if rng.random() < 0.3 else None
        name = f"w{i}-" + "x" * rng.randrange(0, 300)
        envelope = Envelope(
            command=CreateWorkload(id=name, spec=WorkloadSpec(name=name, image="img")),
            client_id=f"c{rng.randrange(4)}",
            seq=i + 1,
            owner=owner,
        )
        payload, doc = encode_payload_doc(envelope, rng.choice([1, 2, 1_700_000_000_000]))
        if rng.random() < docless:
            doc = None
        out.append(Propose(payload, Waiter(), 0.0, doc))
    return out


def _shape(entries: list[Propose | ProposeBatch]) -> list[Any]:
    return [
        (e.payload, e.doc, tuple(id(p) for p in e.proposals))
        if isinstance(e, ProposeBatch)
        else id(e)
        for e in entries
    ]


def test_pack_makes_what_its_general_path_makes() -> None:
    rng = random.Random(30)
    for _ in range(300):
        props = _proposals(rng, rng.randrange(2, 40), docless=rng.choice([0.0, 0.0, 0.1]))
        packing = Packing(
            enabled=True,
            max_commands=rng.choice([1, 2, 5, 39, 256]),
            max_bytes=rng.choice([100, 2_000, 10_000, 256 * 1024]),
        )
        assert _shape(packing.pack(props)) == _shape(packing._pack_each(props))
        listed = [p.payload for p in props]
        assert _shape(packing.pack(props, listed)) == _shape(packing._pack_each(props))


def test_batch_payload_matches_its_reference_and_any_owned_is_owned() -> None:
    rng = random.Random(31)
    for _ in range(300):
        props = _proposals(rng, rng.randrange(1, 40))
        docs = [p.doc for p in props]
        payloads = [p.payload for p in props]
        assert batch_payload(docs, payloads) == _reference_batch_payload(docs, payloads)  # type: ignore[arg-type]
        assert any_owned(payloads) == any(is_owned(p) for p in payloads)
    assert not any_owned([])


class _Core:
    """What ``flush`` hands the core: the payloads of each ``propose_many``."""

    def __init__(self) -> None:
        self.proposed: list[list[bytes]] = []

    def propose_many(self, payloads: list[bytes]) -> tuple[int, int]:
        self.proposed.append(list(payloads))
        return 1, 1 + sum(len(p) for p in self.proposed[:-1])


class _Pending:
    def appended(self, term: int, first: int, entries: list[Any]) -> None:
        pass


def _answer(answer: bool, *_args: object) -> bool:
    return answer


def _reference_flush(
    open_: list[Propose], packing: Packing, may_pack: bool, may_own: bool, limit: int
) -> list[list[bytes]]:
    """What ``ProposalBatches.flush`` proposed before session 31, one batch after another
    (nothing in flight between them)."""
    out = []
    while open_:
        batch = open_
        live = [p for p in batch[:limit] if not p.waiter.done]
        open_ = batch[limit:]
        if not live:
            continue
        if any_owned([p.payload for p in live]) and not may_own:
            for p in live:
                if is_owned(p.payload):
                    p.payload, p.doc = without_owner(p.payload, p.doc)
        entries = packing.pack(live) if may_pack else list(live)
        out.append([e.payload for e in entries])
    return out


def test_flush_proposes_what_its_reference_proposes(monkeypatch: Any) -> None:
    rng = random.Random(32)
    for _ in range(200):
        limit = rng.choice([3, 7, 4096])
        monkeypatch.setattr(batching, "MAX_BATCH", limit)
        n = rng.randrange(1, 30)
        seed = rng.randrange(1 << 30)
        done = {i for i in range(n) if rng.random() < 0.2}
        may_pack, may_own = rng.random() < 0.8, rng.random() < 0.5
        packing = Packing(enabled=True, max_commands=rng.choice([2, 5, 256]))
        sides = []
        for _side in range(2):  # the same proposals, made twice (an owner's strip mutates)
            props = _proposals(random.Random(seed), n, docless=0.1)
            for i in done:
                props[i].waiter.set(None)  # type: ignore[arg-type]
            sides.append(props)
        want = _reference_flush(sides[0], packing, may_pack, may_own, limit)
        core, pending = _Core(), _Pending()
        batches = ProposalBatches(depth=1 << 20, packing=packing)
        batches.open = sides[1]
        batches.flush(
            core,  # type: ignore[arg-type]
            pending,  # type: ignore[arg-type]
            functools.partial(_answer, may_pack),
            0.0,
            functools.partial(_answer, may_own),
        )
        assert core.proposed == want
        assert batches.open == []
