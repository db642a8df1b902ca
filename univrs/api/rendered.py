"""Read results rendered once per state: ``RenderCache``.

A read of one object (``workload.get``, ``instance.get``, ``node.get``) is a pure function of
its arguments and of the state machine it reads; the state machine takes a new revision with
every command or entry it applies (univrs/sm/state.py, "Versions and revisions") and never
changes otherwise. So the document rendered for (operation, arguments) from the state at one
revision is the document for every later read of the same object at that revision: the cache
keeps it, and its CBOR encoding for the fast protocol (``protocol.Encoded``, made once, on the
first response that sends it), until the state moves (then it is emptied: no stale entry can
outlive the revision it was rendered at), or it holds ``MAX_RENDERED`` documents.

What it does not change: which state a read is served from. A linearizable read still waits for
its ReadIndex confirmation and reads the state applied here after it (univrs/api/store.py
``read_at``); the cache only spares rendering and encoding the same document again for it.
Errors (not found, bad arguments) are not kept: they are raised again by the read itself.
The documents are shared between responses: nothing may change them after rendering (the
fast protocol only encodes them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import cbor2

from univrs import codec
from univrs.client.protocol import Encoded
from univrs.sm.state import ClusterStateMachine

__all__ = [
    "MAX_RENDERED",
    "RENDER_ONCE",
    "RenderCache",
    "Rendered",
    "drop_results",
    "encoded_result",
]

# The reads whose result depends on their arguments and the state only (one object's document).
RENDER_ONCE = frozenset({"workload.get", "instance.get", "node.get"})
MAX_RENDERED = 8192  # documents kept for one revision (then new ones are not kept)


@attrs.define(eq=False, slots=True)
class Rendered:
    """One read's result document, shared by the reads of the same object at one revision."""

    doc: Any
    _encoded: Encoded | None = None
    _unencodable: bool = False

    def encoded(self) -> Encoded | None:
        """The document's CBOR, encoded on first use (None if it is not plain data: then the
        caller sends the document itself, and its encoder reports the bug)."""
        if self._encoded is None and not self._unencodable:
            try:
                self._encoded = Encoded(codec.encode_plain(self.doc))
            except (TypeError, ValueError):
                self._unencodable = True
        return self._encoded


@attrs.define(eq=False)
class RenderCache:
    """The rendered results of ``RENDER_ONCE`` reads at the state's current revision."""

    _state: ClusterStateMachine | None = None  # held, so its identity is never reused
    _revision: int = -1
    _index: int = -1
    _docs: dict[tuple[str, tuple[tuple[str, Any], ...]], Rendered] = attrs.field(factory=dict)
    hits: int = 0  # statistics
    misses: int = 0

    def render(
        self, name: str, args: dict[str, Any], state: ClusterStateMachine, read: Any
    ) -> Rendered | None:
        """``read(args, state)``'s result as a shared ``Rendered`` (rendered now, or earlier at
        this revision); None for a read that is not kept (the caller renders it itself).
        Raises what ``read`` raises."""
        if name not in RENDER_ONCE:
            return None
        key = _args_key(args)
        if key is None:
            return None
        if (
            state is not self._state
            or state.revision != self._revision
            or state.last_applied_index != self._index
        ):
            self._docs.clear()
            self._state, self._revision, self._index = (
                state,
                state.revision,
                state.last_applied_index,
            )
        docs = self._docs
        found = docs.get((name, key))
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        rendered = Rendered(read(args, state))
        if len(docs) < MAX_RENDERED:
            docs[name, key] = rendered
        return rendered


def _args_key(args: dict[str, Any]) -> tuple[tuple[str, Any], ...] | None:
    """A hashable key of flat arguments (strings and integers only; else None: not kept)."""
    if len(args) > 4:
        return None
    for name, value in args.items():
        kind = type(value)
        if type(name) is not str or (kind is not str and kind is not int):
            return None
    return tuple(sorted(args.items()))


def drop_results(jobs: Iterable[Any]) -> None:
    """Forget answered reads' results (``service.Job``: their answers hold them, until
    written): a frame's jobs live until its last is answered, and must not keep every page of
    it (s15-budget: 48 pages of 0.8 MB were all held until the frame's end)."""
    for job in jobs:
        job.result = job.rendered = None


def encoded_result(doc: Any) -> Any:
    """A read's result encoded for the fast protocol (``Encoded``: its size known while it is
    held, and the frame copies its bytes); unchanged if it is not plain data (a bug the
    frame's encoder reports)."""
    try:
        return Encoded(cbor2.dumps(doc))
    except (TypeError, ValueError, cbor2.CBOREncodeError):
        return doc
