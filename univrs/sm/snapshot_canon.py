"""Snapshot rows checked without building objects: is a decoded row exactly what the snapshot's
writer would write for the object the reader builds from it?

A staged install (``univrs.storage.sm_ingest``) stores each received object row as it is,
re-encoded from the decoded list, when these checks say the row is *canonical*: well-formed
(every check of the row readers in ``snapshot_read``: types, counts, enum values) and in the
form the writer gives (``_workload_row(_workload_v1(row)) == row``: pairs sorted as
``model.to_pairs`` sorts them, ...). So what it stores equals what the reader-then-writer path
stores, without the objects (about half the CPU of a staging). A row these checks do not pass
may still be valid (unsorted labels, say): the caller then takes the full reader, which
accepts or refuses it with its message. tests/sm/test_snapshot_canon.py checks the contract
on generated and mutated rows.

A workload row's structure (where its groups start, the type of every item) is worked out
once per shape, the row's item types, and remembered (``_Shape``, s14-join): a row of a
shape seen before gets its counts compared and its values checked, the same answer in about
two thirds less time.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from univrs.sm.model import InstanceStatus, PortProtocol

_STATUSES = frozenset(s.value for s in InstanceStatus)
_PROTOCOLS = frozenset(p.value for p in PortProtocol)
_JUST_STR = frozenset({str})
_JUST_INT = frozenset({int})


def _sorted_pairs(flat: list[Any]) -> bool:
    """The pairs of ``flat`` (k1, v1, k2, v2, ...) are in ``to_pairs`` order (sorted tuples;
    repeats kept)."""
    n = len(flat)
    if n <= 2:
        return True
    if n == 4:  # the common case: two pairs, one tuple comparison
        return (flat[0], flat[1]) <= (flat[2], flat[3])
    pairs = list(zip(flat[::2], flat[1::2], strict=True))
    return pairs == sorted(pairs)


def workload_head_ok(v: list[Any]) -> bool:
    """True when the first nine items of workload row ``v`` (at least nine long) have their
    types: id, version, created, name, image, replicas, cpu, memory, the argument count."""
    ident, version, created, name, image, replicas, cpu, memory, n_args = v[:9]
    return (
        type(ident) is str
        and type(version) is int
        and version >= 0
        and type(created) is int
        and created >= 0
        and type(name) is str
        and type(image) is str
        and type(replicas) is int
        and type(cpu) is int
        and type(memory) is int
        and type(n_args) is int
        and n_args >= 0
    )


def _workload_shape(v: Any) -> _Shape | None:
    """The shape of workload row ``v`` when ``_workload_v1`` reads it and ``_workload_row``
    writes it back unchanged (every check of the row, from its values); None when not."""
    if type(v) is not list or len(v) < 12 or not workload_head_ok(v) or "\x00" in v[0]:
        return None  # an id with a NUL: snapshot_read ``_no_nul`` (s14-review2)
    env_at = 9 + v[8]
    if env_at >= len(v):
        return None
    n_env = v[env_at]
    if type(n_env) is not int or n_env < 0:
        return None
    labels_at = env_at + 1 + 2 * n_env
    if labels_at >= len(v):
        return None
    n_labels = v[labels_at]
    if type(n_labels) is not int or n_labels < 0:
        return None
    ports_at = labels_at + 1 + 2 * n_labels
    if ports_at >= len(v):
        return None
    n_ports = v[ports_at]
    if type(n_ports) is not int or n_ports < 0 or ports_at + 1 + 3 * n_ports != len(v):
        return None
    env, labels = v[env_at + 1 : labels_at], v[labels_at + 1 : ports_at]
    if not set(map(type, v[9:env_at] + env + labels)) <= _JUST_STR:
        return None
    if n_ports:
        ports = v[ports_at + 1 :]
        numbers, protocols, names = ports[::3], ports[1::3], ports[2::3]
        if not (
            set(map(type, numbers)) == _JUST_INT
            and set(map(type, protocols + names)) == _JUST_STR
            and set(protocols) <= _PROTOCOLS  # hashable: all str (above)
        ):
            return None
    if not (_sorted_pairs(env) and _sorted_pairs(labels)):
        return None
    return _Shape(env_at, labels_at, ports_at, (v[8], n_env, n_labels, n_ports))


class _Shape:
    """Where a canonical workload row's groups are, for rows of the same item types.

    The item types of a row (``tuple(map(type, row))``) fix its shape: the first nine types
    are fixed and after them the types run ``str * args, int, str * 2 env, int, str * 2
    labels, int, (int, str, str) * ports``, which splits one way only. So a row whose types
    equal those of a row ``_workload_shape`` passed, and whose four counts equal that row's,
    has every type and every count that row had: of its checks, only the ones on values are
    left (``check``: non-negative version and index, known protocols, pairs in order). The
    same answer as ``_workload_shape``, in about a third of its time
    (docs/state-at-scale.md, s14-join; tests/sm/test_snapshot_canon.py compares the two)."""

    __slots__ = ("counts", "env", "expected", "labels", "protocols")

    def __init__(
        self, env_at: int, labels_at: int, ports_at: int, expected: tuple[int, ...]
    ) -> None:
        self.counts = itemgetter(8, env_at, labels_at, ports_at)
        self.expected = expected
        self.env = itemgetter(slice(env_at + 1, labels_at))
        self.labels = itemgetter(slice(labels_at + 1, ports_at))
        self.protocols = itemgetter(slice(ports_at + 2, None, 3)) if expected[3] else None

    def check(self, v: list[Any]) -> bool:
        """``_workload_shape(v) is not None``, for a row of this shape's item types."""
        return (
            self.counts(v) == self.expected
            and "\x00" not in v[0]
            and v[1] >= 0
            and v[2] >= 0
            and (self.protocols is None or _PROTOCOLS.issuperset(self.protocols(v)))
            and _sorted_pairs(self.env(v))
            and _sorted_pairs(self.labels(v))
        )


# Shapes seen, by the rows' item types; bounded (a hostile snapshot of many shapes gets the
# full check for the rest: the same answers, only slower). Shared by threads: a dict's get
# and set are atomic, and two threads storing one key store equal shapes.
_SHAPES: dict[tuple[type, ...], _Shape] = {}
_MAX_SHAPES = 256


def canonical_workload_row(v: Any) -> bool:
    """True when ``v`` is a workload row ``_workload_v1`` reads and ``_workload_row`` writes
    back unchanged."""
    if type(v) is not list:
        return False
    types = tuple(map(type, v))
    shape = _SHAPES.get(types)
    if shape is not None:
        return shape.check(v)
    shape = _workload_shape(v)
    if shape is None:
        return False
    if len(_SHAPES) < _MAX_SHAPES:
        _SHAPES[types] = shape
    return True


def canonical_instance_row(v: Any) -> bool:
    """True when ``v`` is an instance row ``_instance_v1`` reads and ``_instance_row`` writes
    back unchanged."""
    if type(v) is not list or len(v) != 7:
        return False
    ident, workload_id, node_id, status, message, version, created = v
    return (
        type(ident) is str
        and type(workload_id) is str
        and (node_id is None or (type(node_id) is str and "\x00" not in node_id))
        and "\x00" not in ident
        and "\x00" not in workload_id
        and type(status) is str
        and status in _STATUSES
        and type(message) is str
        and type(version) is int
        and version >= 0
        and type(created) is int
        and created >= 0
    )
