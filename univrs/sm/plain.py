"""Conversion of commands, responses and model values to and from *plain data*.

Plain data is what the codec (``univrs.codec``, cbor2) can carry: dict (str keys), list, str,
int, bool, None, bytes. This module imports no codec; CBOR bytes are the codec's business.

Format (version ``COMMAND_FORMAT_VERSION`` = 1)::

    envelope  {"v": 1, "command": <command>, "client_id": str, "seq": int}   (last two optional)
              + "owner": str (optional; only in entries of payload version 3: s14-owner)
    command   {"type": "create-workload", <field>: <value>, ...}   (attrs field names)
    response  {"type": "success", "version": int}
              {"type": "created", "id": str, "version": int}
              {"type": "failure", "code": str, "message": str, "current_version": int}

Optional fields whose value is None are left out; a missing optional field decodes as None.
Maps (env, labels) travel as lists of ``[key, value]`` pairs in key order, so a duplicate key
reaches ``apply`` (and is refused there) instead of being silently dropped by a dict.

Decoding is strict, because it guards the apply loop: exact types (an int is never a bool, a
str is never bytes), every required key present and *no unknown key*. An older replica must
not apply a command it only partly understands: ignoring a field a newer proposer set would
make replicas diverge. Any violation raises ``DecodeError`` naming the path of the bad value.
Ranges and semantics (id syntax, positive amounts) are checked by ``apply``, which answers
``invalid-argument`` instead.

``_COMMANDS`` is the single table from command class to its type tag and field kinds; a test
checks it against the attrs classes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn, TypeVar

import attrs

from univrs.sm.builders import slot_builder
from univrs.sm.commands import (
    COMMAND_TYPES,
    BootstrapToken,
    CloseSession,
    Command,
    CreateInstance,
    CreateToken,
    CreateWorkload,
    DeleteInstance,
    DeleteWorkload,
    DeregisterNode,
    Envelope,
    MintCredits,
    OpenSession,
    RegisterNode,
    RevokeToken,
    ScaleWorkload,
    TransferCredits,
    UpdateInstanceStatus,
    UpdateNodeStatus,
    UpdateWorkload,
)
from univrs.sm.errors import DecodeError
from univrs.sm.model import (
    InstanceSpec,
    InstanceStatus,
    NodeInfo,
    NodeStatus,
    Pairs,
    Port,
    PortProtocol,
    Resources,
    WorkloadSpec,
)
from univrs.sm.responses import Created, ErrorCode, Failure, Response, Success

COMMAND_FORMAT_VERSION = 1

E = TypeVar("E", bound=enum.Enum)


# ------------------------------------------------------------------ strict readers


def fail(path: str, expected: str, value: object) -> NoReturn:
    """Raise a DecodeError saying what was expected at ``path``."""
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise DecodeError(f"{path}: expected {expected}, got {type(value).__name__} {shown}")


def read_map(
    value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A dict with exactly the ``required`` keys and a subset of the ``optional`` ones."""
    if type(value) is not dict:
        fail(path, "a map", value)
    for key in required:
        if key not in value:
            raise DecodeError(f"{path}: missing key {key!r}")
    if len(value) > len(required):
        for key in value:
            if key not in required and key not in optional:
                raise DecodeError(f"{path}: unknown key {key!r}")
    return value


def read_str(value: Any, path: str) -> str:
    """A str."""
    if type(value) is not str:
        fail(path, "a string", value)
    return value


def read_opt_str(value: Any, path: str) -> str | None:
    """A str or None."""
    return None if value is None else read_str(value, path)


def read_int(value: Any, path: str) -> int:
    """An int (not a bool)."""
    if type(value) is not int:
        fail(path, "an integer", value)
    return value


def read_uint(value: Any, path: str) -> int:
    """A non-negative int."""
    if type(value) is not int or value < 0:
        fail(path, "a non-negative integer", value)
    return value


def read_opt_int(value: Any, path: str) -> int | None:
    """An int or None."""
    return None if value is None else read_int(value, path)


def read_list(value: Any, path: str) -> list[Any]:
    """A list."""
    if type(value) is not list:
        fail(path, "a list", value)
    return value


def read_enum(enum_type: type[E], value: Any, path: str) -> E:
    """A member of ``enum_type`` from its value."""
    try:
        return enum_type(value)
    except (ValueError, TypeError):
        fail(path, f"one of {[m.value for m in enum_type]}", value)


def read_pairs(value: Any, path: str) -> Pairs:
    """A list of [str, str] pairs."""
    out = []
    for n, pair in enumerate(read_list(value, path)):
        if type(pair) is not list or len(pair) != 2:
            fail(f"{path}[{n}]", "a [key, value] pair", pair)
        out.append((read_str(pair[0], f"{path}[{n}][0]"), read_str(pair[1], f"{path}[{n}][1]")))
    return tuple(out)


def read_str_tuple(value: Any, path: str) -> tuple[str, ...]:
    """A list of str, as a tuple."""
    return tuple(read_str(v, f"{path}[{n}]") for n, v in enumerate(read_list(value, path)))


def pairs_to_plain(pairs: Pairs) -> list[list[str]]:
    """Pairs as a list of [key, value] lists."""
    return [[k, v] for k, v in pairs]


# ------------------------------------------------------------------ model values


def resources_to_plain(r: Resources) -> dict[str, Any]:
    """Resources as plain data."""
    return {"cpu_millis": r.cpu_millis, "memory_bytes": r.memory_bytes}


def resources_from_plain(value: Any, path: str = "resources") -> Resources:
    """Resources from plain data."""
    m = read_map(value, path, ("cpu_millis", "memory_bytes"))
    return Resources(
        cpu_millis=read_int(m["cpu_millis"], f"{path}.cpu_millis"),
        memory_bytes=read_int(m["memory_bytes"], f"{path}.memory_bytes"),
    )


def _port_to_plain(p: Port) -> dict[str, Any]:
    return {"container_port": p.container_port, "protocol": p.protocol.value, "name": p.name}


def _port_from_plain(value: Any, path: str) -> Port:
    m = read_map(value, path, ("container_port", "protocol", "name"))
    return Port(
        container_port=read_int(m["container_port"], f"{path}.container_port"),
        protocol=read_enum(PortProtocol, m["protocol"], f"{path}.protocol"),
        name=read_str(m["name"], f"{path}.name"),
    )


_SPEC_KEYS = ("name", "image", "replicas", "args", "env", "labels", "resources", "ports")


def workload_spec_to_plain(s: WorkloadSpec) -> dict[str, Any]:
    """A WorkloadSpec as plain data."""
    return {
        "name": s.name,
        "image": s.image,
        "replicas": s.replicas,
        "args": list(s.args),
        "env": pairs_to_plain(s.env),
        "labels": pairs_to_plain(s.labels),
        "resources": resources_to_plain(s.resources),
        "ports": [_port_to_plain(p) for p in s.ports],
    }


def workload_spec_from_plain(value: Any, path: str = "spec") -> WorkloadSpec:
    """A WorkloadSpec from plain data."""
    m = read_map(value, path, _SPEC_KEYS)
    return WorkloadSpec(
        name=read_str(m["name"], f"{path}.name"),
        image=read_str(m["image"], f"{path}.image"),
        replicas=read_int(m["replicas"], f"{path}.replicas"),
        args=read_str_tuple(m["args"], f"{path}.args"),
        env=read_pairs(m["env"], f"{path}.env"),
        labels=read_pairs(m["labels"], f"{path}.labels"),
        resources=resources_from_plain(m["resources"], f"{path}.resources"),
        ports=tuple(
            _port_from_plain(p, f"{path}.ports[{n}]")
            for n, p in enumerate(read_list(m["ports"], f"{path}.ports"))
        ),
    )


def instance_spec_to_plain(s: InstanceSpec) -> dict[str, Any]:
    """An InstanceSpec as plain data."""
    out: dict[str, Any] = {"workload_id": s.workload_id}
    if s.node_id is not None:
        out["node_id"] = s.node_id
    return out


def instance_spec_from_plain(value: Any, path: str = "spec") -> InstanceSpec:
    """An InstanceSpec from plain data."""
    m = read_map(value, path, ("workload_id",), ("node_id",))
    return InstanceSpec(
        workload_id=read_str(m["workload_id"], f"{path}.workload_id"),
        node_id=read_opt_str(m.get("node_id"), f"{path}.node_id"),
    )


def node_info_to_plain(i: NodeInfo) -> dict[str, Any]:
    """A NodeInfo as plain data."""
    return {
        "id": i.id,
        "addresses": list(i.addresses),
        "capacity": resources_to_plain(i.capacity),
        "labels": pairs_to_plain(i.labels),
    }


def node_info_from_plain(value: Any, path: str = "info") -> NodeInfo:
    """A NodeInfo from plain data."""
    m = read_map(value, path, ("id", "addresses", "capacity", "labels"))
    return NodeInfo(
        id=read_str(m["id"], f"{path}.id"),
        addresses=read_str_tuple(m["addresses"], f"{path}.addresses"),
        capacity=resources_from_plain(m["capacity"], f"{path}.capacity"),
        labels=read_pairs(m["labels"], f"{path}.labels"),
    )


# ------------------------------------------------------------------ commands


class _Kind(NamedTuple):
    """How one field travels: encoder, decoder (value, path), and whether None is omitted."""

    enc: Callable[[Any], Any]
    dec: Callable[[Any, str], Any]
    optional: bool = False


def _same(value: Any) -> Any:
    return value


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


_STR = _Kind(_same, read_str)
_INT = _Kind(_same, read_int)
_OPT_STR = _Kind(_same, read_opt_str, optional=True)
_OPT_INT = _Kind(_same, read_opt_int, optional=True)
_WSPEC = _Kind(workload_spec_to_plain, workload_spec_from_plain)
_ISPEC = _Kind(instance_spec_to_plain, instance_spec_from_plain)
_NINFO = _Kind(node_info_to_plain, node_info_from_plain)
_ISTATUS = _Kind(_enum_value, lambda v, p: read_enum(InstanceStatus, v, p))
_NSTATUS = _Kind(_enum_value, lambda v, p: read_enum(NodeStatus, v, p))
_STRS = _Kind(list, read_str_tuple)

# The one table: command class -> (type tag, {field name: kind}) in attrs field order.
_COMMANDS: dict[type[Any], tuple[str, dict[str, _Kind]]] = {
    CreateWorkload: ("create-workload", {"id": _STR, "spec": _WSPEC}),
    UpdateWorkload: (
        "update-workload",
        {"id": _STR, "spec": _WSPEC, "expected_version": _OPT_INT},
    ),
    DeleteWorkload: ("delete-workload", {"id": _STR, "expected_version": _OPT_INT}),
    ScaleWorkload: (
        "scale-workload",
        {"id": _STR, "replicas": _INT, "expected_version": _OPT_INT},
    ),
    CreateInstance: (
        "create-instance",
        {"id": _STR, "spec": _ISPEC, "fence_term": _OPT_INT},
    ),
    UpdateInstanceStatus: (
        "update-instance-status",
        {
            "id": _STR,
            "status": _ISTATUS,
            "message": _STR,
            "node_id": _OPT_STR,
            "expected_version": _OPT_INT,
        },
    ),
    DeleteInstance: (
        "delete-instance",
        {"id": _STR, "expected_version": _OPT_INT, "fence_term": _OPT_INT},
    ),
    RegisterNode: ("register-node", {"info": _NINFO, "status": _NSTATUS}),
    UpdateNodeStatus: (
        "update-node-status",
        {"id": _STR, "status": _NSTATUS, "expected_version": _OPT_INT},
    ),
    DeregisterNode: ("deregister-node", {"id": _STR, "expected_version": _OPT_INT}),
    TransferCredits: ("transfer-credits", {"from_peer": _STR, "to_peer": _STR, "amount": _INT}),
    MintCredits: ("mint-credits", {"to_peer": _STR, "amount": _INT, "reason": _STR}),
    OpenSession: ("open-session", {"owner": _OPT_STR}),
    CloseSession: ("close-session", {"client_id": _STR, "owner": _OPT_STR}),
    CreateToken: (
        "create-token",
        {"id": _STR, "name": _STR, "roles": _STRS, "secret_hash": _STR},
    ),
    BootstrapToken: ("bootstrap-token", {"id": _STR, "name": _STR, "secret_hash": _STR}),
    RevokeToken: ("revoke-token", {"id": _STR}),
}
_BY_TAG: dict[str, tuple[type[Any], dict[str, _Kind]]] = {
    tag: (cls, fields) for cls, (tag, fields) in _COMMANDS.items()
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    tag: ("type", *(n for n, k in fields.items() if not k.optional))
    for tag, (_, fields) in _BY_TAG.items()
}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    tag: tuple(n for n, k in fields.items() if k.optional) for tag, (_, fields) in _BY_TAG.items()
}
# Per tag, (field name, decoder, the field's path) for commands read at the path
# ``envelope.command`` (every command of every entry applied: not an f-string per field each).
_ENVELOPE_FIELDS: dict[str, tuple[tuple[str, Callable[[Any, str], Any], str], ...]] = {
    tag: tuple((n, k.dec, f"envelope.command.{n}") for n, k in fields.items())
    for tag, (_, fields) in _BY_TAG.items()
}
assert set(_COMMANDS) == set(COMMAND_TYPES), "every command class needs a row in _COMMANDS"


def command_type_tag(command_type: type[Any]) -> str:
    """The plain type tag of a command class (e.g. ``"create-workload"``)."""
    return _COMMANDS[command_type][0]


def command_to_plain(command: Command) -> dict[str, Any]:
    """A command as plain data. Raises TypeError for an object that is not a command."""
    row = _COMMANDS.get(type(command))
    if row is None:
        raise TypeError(f"not a command: {type(command).__name__}")
    tag, fields = row
    out: dict[str, Any] = {"type": tag}
    for name, kind in fields.items():
        value = getattr(command, name)
        if value is None and kind.optional:
            continue
        out[name] = kind.enc(value)
    return out


def command_from_plain(value: Any, path: str = "command") -> Command:
    """A command from plain data; raises DecodeError for anything malformed."""
    if type(value) is not dict:
        fail(path, "a map", value)
    tag = value.get("type")
    if type(tag) is not str or tag not in _BY_TAG:
        fail(f"{path}.type", f"a command type {sorted(_BY_TAG)}", tag)
    row = _BY_TAG[tag]
    cls, fields = row
    m = read_map(value, path, _REQUIRED[tag], _OPTIONAL[tag])
    if path == "envelope.command":
        get = m.get
        kwargs = {name: dec(get(name), at) for name, dec, at in _ENVELOPE_FIELDS[tag]}
    else:
        kwargs = {name: kind.dec(m.get(name), f"{path}.{name}") for name, kind in fields.items()}
    command: Command = cls(**kwargs)
    return command


def envelope_to_plain(envelope: Envelope) -> dict[str, Any]:
    """An envelope (command plus optional client id and seq) as plain data."""
    out: dict[str, Any] = {
        "v": COMMAND_FORMAT_VERSION,
        "command": command_to_plain(envelope.command),
    }
    if envelope.client_id is not None:
        out["client_id"] = envelope.client_id
    if envelope.seq is not None:
        out["seq"] = envelope.seq
    if envelope.owner is not None:
        out["owner"] = envelope.owner
    return out


_ENVELOPE_KEYS = ("client_id", "seq")
_ENVELOPE_KEYS_OWNED = ("client_id", "seq", "owner")


def envelope_plain_fast(value: Any, owners: bool) -> Envelope | None:
    """``envelope_from_plain(value, owners=owners)`` when ``_envelope_fast`` reads it whole,
    else None: then it is plain data (str keys, exact str/int/None values, a command map alike)."""
    if type(value) is not dict:
        return None
    return _envelope_fast(value, owners, False)


def envelope_from_plain(value: Any, *, owners: bool = False) -> Envelope:
    """An envelope from plain data; raises DecodeError for anything malformed or a format
    version this code does not know. ``owner`` is a known key only with ``owners`` (an entry
    of payload version 3, univrs/runtime/payload.py): in older entries it is unknown, as it
    is to the code that wrote them, so every replica refuses it alike."""
    if type(value) is dict:
        read = _envelope_fast(value, owners)
        if read is not None:
            return read
    m = read_map(
        value, "envelope", ("v", "command"), _ENVELOPE_KEYS_OWNED if owners else _ENVELOPE_KEYS
    )
    version = m["v"]
    if type(version) is not int or version != COMMAND_FORMAT_VERSION:
        fail("envelope.v", f"command format version {COMMAND_FORMAT_VERSION}", version)
    return Envelope(
        command=command_from_plain(m["command"], "envelope.command"),
        client_id=read_opt_str(m.get("client_id"), "envelope.client_id"),
        seq=read_opt_int(m.get("seq"), "envelope.seq"),
        owner=read_opt_str(m.get("owner"), "envelope.owner"),
    )


# ------------------------------------------------------------------ responses


def response_to_plain(response: Response) -> dict[str, Any]:
    """A response as plain data."""
    if type(response) is Success:
        return {"type": "success", "version": response.version}
    if type(response) is Created:
        return {"type": "created", "id": response.id, "version": response.version}
    if type(response) is Failure:
        out: dict[str, Any] = {
            "type": "failure",
            "code": response.code.value,
            "message": response.message,
        }
        if response.current_version is not None:
            out["current_version"] = response.current_version
        return out
    raise TypeError(f"not a response: {type(response).__name__}")


def response_from_plain(value: Any, path: str = "response") -> Response:
    """A response from plain data; raises DecodeError for anything malformed."""
    if type(value) is not dict:
        fail(path, "a map", value)
    tag = value.get("type")
    if tag == "success":
        m = read_map(value, path, ("type", "version"))
        return Success(version=read_uint(m["version"], f"{path}.version"))
    if tag == "created":
        m = read_map(value, path, ("type", "id", "version"))
        return Created(
            id=read_str(m["id"], f"{path}.id"),
            version=read_uint(m["version"], f"{path}.version"),
        )
    if tag == "failure":
        m = read_map(value, path, ("type", "code", "message"), ("current_version",))
        current = m.get("current_version")
        return Failure(
            code=read_enum(ErrorCode, m["code"], f"{path}.code"),
            message=read_str(m["message"], f"{path}.message"),
            current_version=None if current is None else read_uint(current, f"{path}.version"),
        )
    fail(f"{path}.type", "success, created or failure", tag)


def command_fields(command_type: type[Any]) -> tuple[str, ...]:
    """The field names the table encodes for a command class (for the table's own test)."""
    return tuple(_COMMANDS[command_type][1])


# ------------------------------------------------------------------ the apply path's fast read
# Every command of every entry a follower applies is read by ``envelope_from_plain``; a
# well-formed envelope takes this path, the general path's checks written out (round 17). It
# returns an envelope only when every check passes, else None, and the general path reads it
# from the start: the same envelopes accepted, every refusal (and its message) the general's.

_FAST_SOURCES: dict[type[Any], str] = {}  # the readers' code, for the curious
_FAST_CHECKS = {
    id(_STR): "type({v}) is str",
    id(_INT): "type({v}) is int",
    id(_OPT_STR): "({v} is None or type({v}) is str)",
    id(_OPT_INT): "({v} is None or type({v}) is int)",
}


def _fast_command_reader(cls: type[Any], fields: dict[str, _Kind]) -> Callable[[Any], Any] | None:
    """For a command whose fields are all strings and ints (optional or not): a function
    reading it from its map (the map holds "type"), or None for a map the general path must
    read; None for any other command."""
    if not all(id(kind) in _FAST_CHECKS for kind in fields.values()):
        return None
    required = [n for n, k in fields.items() if not k.optional]
    optional = [n for n, k in fields.items() if k.optional]
    missing = "".join(f" or {n!r} not in m" for n in required)
    count = " + ".join([str(1 + len(required)), *(f"({n!r} in m)" for n in optional)])
    lines = ["def read(m):", f"    if len(m) != {count}{missing}:", "        return None"]
    names = []
    for i, (name, kind) in enumerate(fields.items()):
        v = f"v{i}"
        names.append(f"{name}={v}")
        lines.append(f"    {v} = m.get({name!r})" if kind.optional else f"    {v} = m[{name!r}]")
        lines.append(f"    if not {_FAST_CHECKS[id(kind)].format(v=v)}:")
        lines.append("        return None")
    try:  # built slot by slot (univrs/sm/builders.py), the values in attrs' field order
        scope: dict[str, Any] = {"cls": slot_builder(cls)}
        at = {name: i for i, name in enumerate(fields)}
        lines.append(f"    return cls({', '.join(f'v{at[a.name]}' for a in attrs.fields(cls))})")
    except TypeError:
        scope = {"cls": cls}
        lines.append(f"    return cls({', '.join(names)})")
    _FAST_SOURCES[cls] = "\n".join(lines)
    exec("\n".join(lines), scope)  # the code is built here, from the command table
    reader: Callable[[Any], Any] = scope["read"]
    return reader


_FAST_COMMANDS: dict[str, Callable[[Any], Any]] = {
    tag: reader
    for tag, (cls, fields) in _BY_TAG.items()
    if (reader := _fast_command_reader(cls, fields)) is not None
}


_build_envelope = slot_builder(Envelope)  # (command, client_id, seq, owner)


def _envelope_fast(value: dict[Any, Any], owners: bool, general: bool = True) -> Envelope | None:
    """``envelope_from_plain(value)`` if every check passes, else None (see above); with
    ``general`` False, None too for a command no generated reader reads (round 18)."""
    version = value.get("v")
    if type(version) is not int or version != COMMAND_FORMAT_VERSION:
        return None
    client_id, seq = value.get("client_id"), value.get("seq")
    owner = value.get("owner") if owners else None
    keys = 2 + ("client_id" in value) + ("seq" in value) + (owners and "owner" in value)
    if (
        len(value) != keys
        or "command" not in value
        or not (client_id is None or type(client_id) is str)
        or not (seq is None or type(seq) is int)
        or not (owner is None or type(owner) is str)
    ):
        return None
    plain = value["command"]
    if type(plain) is not dict:
        return None
    tag = plain.get("type")
    read = _FAST_COMMANDS.get(tag) if type(tag) is str else None
    if read is not None:
        command = read(plain)
        if command is None:
            return None
    elif general:  # another command: read as ever (its refusal is the general path's)
        command = command_from_plain(plain, "envelope.command")
    else:
        return None
    envelope: Envelope = _build_envelope(command, client_id, seq, owner)
    return envelope
