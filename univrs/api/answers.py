"""A workload write's answer for the fast protocol, encoded from shared parts: ``WorkloadAnswers``.

A write of a workload (``workload.create``, ``update``, ``scale``) is answered with the whole
workload document (``convert.stored_workload_doc``: about 40 CBOR items). Built as a document,
then encoded by the response writer, it cost the leader about 5 µs per write (docs/
performance.md, "Round 15"), though most of it does not change from one write of a workload to
the next: a scale changes ``replicas`` and ``version``, and the state machine's new version
shares its spec's other parts (``attrs.evolve``), objects that the stored versions hold anyway.

So the answer is assembled as CBOR bytes (``protocol.Encoded``, which the response frame carries
as they are): a CBOR map is its head followed by its keys and values, each one item, so the
document's bytes are the concatenation of its pieces' bytes. What changes per write (id,
version, created index, replicas) is encoded per write, in one ``cbor2.dumps`` call; the rest
is kept per workload id as long as the spec's parts are the *same objects* (``is``, never
``==``: an equal value of another type could encode differently), and the status's bytes per
status object (``sm.status`` shares one object per distinct status). The bytes are exactly
``cbor2.dumps(stored_workload_doc(stored, status))`` (tests/api/test_answers.py), so a client
decodes the same document as before; nothing about the API changed.

The caches hold the objects whose identity they test, so an id is never reused while its entry
lives; both are bounded (emptied when full): by count, and the spec parts also by their encoded
bytes (``MAX_KEPT_BYTES``; a spec may be megabytes, and 8192 of them must not be kept,
s15-review2), and a spec whose parts alone exceed ``MAX_PART_BYTES`` is not kept at all.
"""

from __future__ import annotations

from typing import Any

import attrs
import cbor2

from univrs.api import convert as cv
from univrs.client.protocol import Encoded
from univrs.sm.model import WorkloadSpec, WorkloadStatus
from univrs.sm.objects import StoredWorkload

__all__ = ["MAX_KEPT", "MAX_KEPT_BYTES", "MAX_PART_BYTES", "WorkloadAnswers"]

MAX_KEPT = 8192  # workloads' spec parts (and statuses) kept; emptied when full
MAX_KEPT_BYTES = 32 * 1024 * 1024  # the kept spec parts' encoded bytes; emptied past it
MAX_PART_BYTES = 256 * 1024  # a spec encoded larger is encoded per write, never kept

_WORKLOAD_HEAD = b"\xa5"  # a map of 5: id, version, created_index, spec, status
_SPEC_HEAD = b"\xa8"  # a map of 8: name, image, replicas, args, env, labels, resources, ports
_STATUS_KEY = cbor2.dumps("status")
_UINT_BELOW_24 = [bytes((n,)) for n in range(24)]


@attrs.define(eq=False, slots=True)
class _SpecParts:
    """The encoded parts of one workload's spec that a write does not change, and the objects
    they were encoded from (compared by identity)."""

    name: str
    image: str
    args: Any
    env: Any
    labels: Any
    resources: Any
    ports: Any
    before_replicas: bytes  # "name" name "image" image "replicas"
    after_replicas: bytes  # "args" [...] "env" {...} "labels" {...} "resources" {...} "ports" [...]

    def fits(self, s: WorkloadSpec) -> bool:
        return (
            s.name is self.name
            and s.image is self.image
            and s.args is self.args
            and s.env is self.env
            and s.labels is self.labels
            and s.resources is self.resources
            and s.ports is self.ports
        )


def _spec_parts(s: WorkloadSpec) -> _SpecParts:
    before = cbor2.dumps(["name", s.name, "image", s.image, "replicas"])
    tail = cbor2.dumps(cv.spec_tail_doc(s))
    return _SpecParts(
        name=s.name,
        image=s.image,
        args=s.args,
        env=s.env,
        labels=s.labels,
        resources=s.resources,
        ports=s.ports,
        before_replicas=before[1:],  # an array of 5 < 24 items: its head is one byte
        after_replicas=tail[1:],  # a map of 5: the same
    )


@attrs.define(eq=False)
class WorkloadAnswers:
    """Encodes workload documents for the fast protocol, reusing their unchanged parts (see
    the module docstring). One per ``ApiService``."""

    _specs: dict[str, _SpecParts] = attrs.field(factory=dict)
    _statuses: dict[int, tuple[WorkloadStatus, bytes]] = attrs.field(factory=dict)
    _kept_bytes: int = 0  # encoded bytes of the parts in ``_specs``
    hits: int = 0  # statistics: spec parts reused
    misses: int = 0

    def kept_bytes(self) -> int:
        """The encoded bytes of the spec parts kept (at most ``MAX_KEPT_BYTES``)."""
        return self._kept_bytes

    def encode(self, stored: StoredWorkload, status: WorkloadStatus) -> Encoded:
        """``stored_workload_doc(stored, status)`` as CBOR, exactly ``cbor2.dumps`` of it."""
        spec = stored.spec
        parts = self._specs.get(stored.id)
        if parts is not None and parts.fits(spec):
            self.hits += 1
        else:
            self.misses += 1
            parts = _spec_parts(spec)
            size = len(parts.before_replicas) + len(parts.after_replicas)
            old = self._specs.pop(stored.id, None)
            if old is not None:
                self._kept_bytes -= len(old.before_replicas) + len(old.after_replicas)
            if size <= MAX_PART_BYTES:
                if len(self._specs) >= MAX_KEPT or self._kept_bytes + size > MAX_KEPT_BYTES:
                    self._specs.clear()
                    self._kept_bytes = 0
                self._specs[stored.id] = parts
                self._kept_bytes += size
        kept = self._statuses.get(id(status))
        if kept is None or kept[0] is not status:
            if len(self._statuses) >= MAX_KEPT:
                self._statuses.clear()
            kept = self._statuses[id(status)] = (
                status,
                _STATUS_KEY + cbor2.dumps(cv.status_doc(status)),
            )
        replicas = spec.replicas
        if type(replicas) is int and 0 <= replicas < 24:
            encoded_replicas = _UINT_BELOW_24[replicas]
        else:
            encoded_replicas = cbor2.dumps(replicas)
        head = cbor2.dumps(
            ["id", stored.id, "version", stored.version, "created_index", stored.created_index]
        )
        return Encoded(
            b"".join(
                (
                    _WORKLOAD_HEAD,
                    head[1:],  # an array of 6: a one-byte head
                    _SPEC_KEY,
                    _SPEC_HEAD,
                    parts.before_replicas,
                    encoded_replicas,
                    parts.after_replicas,
                    kept[1],
                )
            )
        )


_SPEC_KEY = cbor2.dumps("spec")
