"""Change events: what one applied command did to the object tables (for watches).

Every change the state machine applies to a workload, an instance or a node is one ``Event``:
``put`` (created or replaced: ``object`` is the object after, ``prev`` the object before or
None when it was created) or ``delete`` (``object`` None, ``prev`` the deleted object). Its
``revision`` is the log index of the command, so the events of one command share a revision,
and every replica computes the same events in the same order (they come from a deterministic
apply). Cascades list the dependents first: a deleted workload's or node's instances, then
the workload or node itself; a node going down lists its instances turned ``unknown``, then
the node.

A workload's status is derived from its instances, so it is not an event of its own: an
instance's status change is an ``instance`` event, and a workload's ``put`` carries the status
as of its revision. Credits and sessions make no events.
"""

from __future__ import annotations

import enum

import attrs

from univrs.sm.model import Instance, Node, Workload


class EventType(enum.StrEnum):
    """What happened to the object."""

    PUT = "put"  # created or replaced
    DELETE = "delete"


class ObjectKind(enum.StrEnum):
    """The kind of object an event is about (what ``watch(kinds)`` selects)."""

    WORKLOAD = "workload"
    INSTANCE = "instance"
    NODE = "node"


WatchedObject = Workload | Instance | Node


@attrs.frozen(kw_only=True, slots=True)
class Event:
    """One change to one object at ``revision`` (the log index of the command)."""

    revision: int
    type: EventType
    kind: ObjectKind
    id: str
    object: WatchedObject | None  # after the change; None for a delete
    prev: WatchedObject | None  # before the change; None for a creation


def parse_kinds(names: object) -> frozenset[ObjectKind] | str:
    """The kinds named (``workload`` or ``workloads``, ...; empty: every kind), or what is
    wrong with the names."""
    if not isinstance(names, list | tuple):
        return "kinds must be a list of kind names"
    found: set[ObjectKind] = set()
    for name in names:
        if not isinstance(name, str):
            return "kinds must be a list of kind names"
        singular = name[:-1] if name.endswith("s") else name
        try:
            found.add(ObjectKind(singular))
        except ValueError:
            known = ", ".join(f"{k.value}s" for k in ObjectKind)
            return f"unknown kind {name[:64]!r} (known: {known})"
    return frozenset(found or ObjectKind)
