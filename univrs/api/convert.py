"""Request arguments to model values, and model values to response documents (JSON and CBOR).

The REST API (JSON) and the fast client protocol (CBOR) carry the same documents, so one set of
readers serves both. Readers are strict and name the offending field in every error
(``InvalidArgument(field="spec.replicas")``): exact types (an integer is never a bool or a
float), no unknown fields, required fields present. Value ranges and syntax (ids, names, label
keys, amounts) are then checked with the state machine's own validators (``univrs.sm.validate``)
*before* anything is proposed, so a bad request never reaches the log.

Documents use JSON objects for string maps (``"labels": {"tier": "web"}``), where the state
machine keeps sorted pairs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from univrs.errors import InvalidArgument
from univrs.sm.model import (
    Instance,
    Node,
    NodeInfo,
    Port,
    PortProtocol,
    Resources,
    Workload,
    WorkloadSpec,
    WorkloadStatus,
)
from univrs.sm.objects import StoredWorkload
from univrs.sm.validate import (
    MAX_IMAGE_LEN,
    MAX_QUANTITY,
    MAX_TEXT_LEN,
    MAX_VERSION,
    VALID_IDS,
    node_info_problem,
    remembered_id_problem,
    workload_spec_problem,
)

# ------------------------------------------------------------------ generic readers


def join(path: str, name: str) -> str:
    """``spec`` + ``replicas`` -> ``spec.replicas`` (an empty path is the document itself)."""
    return f"{path}.{name}" if path else name


def read_object(
    value: Any,
    path: str,
    *,
    required: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> dict[str, Any]:
    """A map with all ``required`` keys and only ``required``/``optional`` ones."""
    what = path or "the request body"
    if type(value) is not dict:
        raise InvalidArgument(f"{what} must be an object", field=path or None)
    req = tuple(required)
    allowed = set(req) | set(optional)
    for key in value:
        if key not in allowed:
            name = join(path, str(key))
            expected = ", ".join(sorted(allowed)) or "none"
            raise InvalidArgument(
                f"unknown field {name!r} (expected: {expected})",
                field=name if encodable(name) else path or None,
            )
    for key in req:
        if key not in value:
            raise InvalidArgument(f"missing field {join(path, key)!r}", field=join(path, key))
    return value


def encodable(text: str) -> bool:
    """True if ``text`` is valid Unicode (JSON can smuggle in lone surrogates; CBOR cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_str(value: Any, path: str) -> str:
    if type(value) is not str:
        raise InvalidArgument(f"{path} must be a string", field=path)
    if not encodable(value):
        raise InvalidArgument(f"{path} is not valid Unicode (lone surrogate)", field=path)
    return value


def read_int(value: Any, path: str, *, minimum: int = 0, maximum: int = MAX_QUANTITY) -> int:
    """An integer in [minimum, maximum]: never a bool; a float only when it is integral
    (JSON does not tell ``2`` from ``2.0``, and JSON Schema calls both integers)."""
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise InvalidArgument(f"{path} must be an integer", field=path)
    if not minimum <= value <= maximum:
        raise InvalidArgument(
            f"{path} must be between {minimum} and {maximum}, got {value}", field=path
        )
    return value


def read_id(value: Any, path: str) -> str:
    """An object, node, peer or client id (the state machine's id syntax). The ids that pass
    are remembered (univrs/sm/validate.py ``VALID_IDS``, shared with the state machine's
    client id check and ``opargs.existing_id``)."""
    if type(value) is str and value in VALID_IDS:
        return value
    text = read_str(value, path)
    problem = remembered_id_problem(path, text)
    if problem:
        raise InvalidArgument(problem, field=path)
    return text


def read_version(value: Any, path: str = "expected_version") -> int | None:
    """An optional expected version."""
    if value is None:
        return None
    return read_int(value, path, minimum=0, maximum=MAX_VERSION)


def read_str_list(value: Any, path: str) -> tuple[str, ...]:
    if type(value) is not list:
        raise InvalidArgument(f"{path} must be an array of strings", field=path)
    return tuple(read_str(v, f"{path}[{n}]") for n, v in enumerate(value))


def read_str_map(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    """A JSON object of string values, as sorted pairs."""
    if type(value) is not dict:
        raise InvalidArgument(f"{path} must be an object of strings", field=path)
    out = []
    for key, item in value.items():
        if type(key) is not str or not encodable(key):
            raise InvalidArgument(f"{path} keys must be valid strings", field=path)
        out.append((key, read_str(item, f"{path}.{key}")))
    return tuple(sorted(out))


def read_enum(enum_type: Any, value: Any, path: str) -> Any:
    choices = [m.value for m in enum_type]
    if type(value) is not str or value not in choices:
        raise InvalidArgument(f"{path} must be one of {', '.join(choices)}", field=path)
    return enum_type(value)


_FIELD_ALIASES = {"port": "ports", "address": "addresses"}  # validators speak of one item


def problem_field(prefix: str, problem: str, known: Iterable[str]) -> str | None:
    """The field a validator's message is about (its first word), if it is a known field."""
    first = problem.split(" ", 1)[0].rstrip(":")
    first = _FIELD_ALIASES.get(first, first)
    return join(prefix, first) if first in set(known) or "." in first else None


def check(problem: str | None, prefix: str, known: Iterable[str]) -> None:
    """Raise InvalidArgument for a validator's problem, naming the field when it can."""
    if problem:
        field = problem_field(prefix, problem, known)
        message = f"{prefix}: {problem}" if prefix and field is None else problem
        if field is not None and not problem.startswith(field):
            message = f"{field}: {problem}"
        raise InvalidArgument(message, field=field or prefix or None)


# ------------------------------------------------------------------ model readers

_SPEC_REQUIRED = ("name", "image")
_SPEC_OPTIONAL = ("replicas", "args", "env", "labels", "resources", "ports")
SPEC_FIELDS = _SPEC_REQUIRED + _SPEC_OPTIONAL


def read_resources(value: Any, path: str) -> Resources:
    m = read_object(value, path, optional=("cpu_millis", "memory_bytes"))
    return Resources(
        cpu_millis=read_int(m.get("cpu_millis", 0), join(path, "cpu_millis")),
        memory_bytes=read_int(m.get("memory_bytes", 0), join(path, "memory_bytes")),
    )


def read_port(value: Any, path: str) -> Port:
    m = read_object(value, path, required=("container_port",), optional=("protocol", "name"))
    return Port(
        container_port=read_int(
            m["container_port"], join(path, "container_port"), minimum=1, maximum=65535
        ),
        protocol=read_enum(PortProtocol, m.get("protocol", "tcp"), join(path, "protocol")),
        name=read_str(m.get("name", ""), join(path, "name")),
    )


# Stricter than the state machine (which takes any printable text): image references and node
# addresses are printable ASCII without spaces (OCI references and host:port are), so the
# OpenAPI document can state the rule exactly.
ASCII_TOKEN = re.compile(r"[!-~]+")


def read_token(value: Any, path: str, max_len: int) -> str:
    """Printable ASCII without whitespace, 1..max_len characters."""
    text = read_str(value, path)
    if not 0 < len(text) <= max_len or not ASCII_TOKEN.fullmatch(text):
        raise InvalidArgument(
            f"{path} must be 1-{max_len} printable ASCII characters without spaces", field=path
        )
    return text


def read_workload_spec(value: Any, path: str = "spec") -> WorkloadSpec:
    """A workload spec document (``name`` and ``image`` required, the rest defaulted)."""
    m = read_object(value, path, required=_SPEC_REQUIRED, optional=_SPEC_OPTIONAL)
    ports = m.get("ports", [])
    if type(ports) is not list:
        raise InvalidArgument(f"{join(path, 'ports')} must be an array", field=join(path, "ports"))
    spec = WorkloadSpec(
        name=read_str(m["name"], join(path, "name")),
        image=read_token(m["image"], join(path, "image"), MAX_IMAGE_LEN),
        replicas=read_int(m.get("replicas", 1), join(path, "replicas"), maximum=MAX_QUANTITY),
        args=read_str_list(m.get("args", []), join(path, "args")),
        env=read_str_map(m.get("env", {}), join(path, "env")),
        labels=read_str_map(m.get("labels", {}), join(path, "labels")),
        resources=read_resources(m.get("resources", {}), join(path, "resources")),
        ports=tuple(read_port(p, f"{join(path, 'ports')}[{n}]") for n, p in enumerate(ports)),
    )
    check(workload_spec_problem(spec), path, SPEC_FIELDS)
    return spec


def read_node_info(m: dict[str, Any], node_id: str) -> NodeInfo:
    """The node-info fields of a register request (``m`` already checked for unknown keys)."""
    addresses = m.get("addresses", [])
    if type(addresses) is not list:
        raise InvalidArgument("addresses must be an array of strings", field="addresses")
    info = NodeInfo(
        id=node_id,
        addresses=tuple(
            read_token(a, f"addresses[{n}]", MAX_TEXT_LEN) for n, a in enumerate(addresses)
        ),
        capacity=read_resources(m.get("capacity", {}), "capacity"),
        labels=read_str_map(m.get("labels", {}), "labels"),
    )
    check(node_info_problem(info), "", ("addresses", "capacity", "labels"))
    return info


def read_labels_filter(value: Any, path: str = "labels") -> tuple[tuple[str, str], ...]:
    """A label selector: an object of required key/value pairs."""
    return read_str_map(value, path)


# ------------------------------------------------------------------ documents


def _pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    return dict(pairs)


def resources_doc(r: Resources) -> dict[str, int]:
    return {"cpu_millis": r.cpu_millis, "memory_bytes": r.memory_bytes}


def spec_doc(s: WorkloadSpec) -> dict[str, Any]:
    return {"name": s.name, "image": s.image, "replicas": s.replicas, **spec_tail_doc(s)}


def spec_tail_doc(s: WorkloadSpec) -> dict[str, Any]:
    """``spec_doc``'s keys after ``replicas``, in its order (what a scale does not change:
    univrs/api/answers.py encodes them once per spec)."""
    return {
        "args": list(s.args),
        "env": _pairs(s.env),
        "labels": _pairs(s.labels),
        "resources": resources_doc(s.resources),
        "ports": [
            {"container_port": p.container_port, "protocol": p.protocol.value, "name": p.name}
            for p in s.ports
        ],
    }


def workload_doc(w: Workload) -> dict[str, Any]:
    return stored_workload_doc(w, w.status)


def stored_workload_doc(w: Workload | StoredWorkload, st: WorkloadStatus) -> dict[str, Any]:
    """``workload_doc`` of the workload ``w`` (or its stored part) with the status ``st``."""
    return {
        "id": w.id,
        "version": w.version,
        "created_index": w.created_index,
        "spec": spec_doc(w.spec),
        "status": status_doc(st),
    }


def status_doc(st: WorkloadStatus) -> dict[str, Any]:
    return {
        "phase": st.phase.value,
        "desired": st.desired,
        "pending": st.pending,
        "running": st.running,
        "succeeded": st.succeeded,
        "failed": st.failed,
        "unknown": st.unknown,
    }


def workload_row_parts(v: list[Any]) -> tuple[list[str], list[str], list[str], list[Any]]:
    """(args, env, labels, ports) of a stored workload row (``snapshot._workload_row``): the
    lists of its variable parts, env and labels flat (key, value, ...), ports flat (number,
    protocol, name, ...). The row is one the state stores (written by its encoder, or
    checked canonical by a staging): its form is trusted here."""
    env_at = 9 + v[8]
    labels_at = env_at + 1 + 2 * v[env_at]
    ports_at = labels_at + 1 + 2 * v[labels_at]
    return v[9:env_at], v[env_at + 1 : labels_at], v[labels_at + 1 : ports_at], v[ports_at + 1 :]


def workload_row_doc(v: list[Any], st: WorkloadStatus) -> dict[str, Any]:
    """``stored_workload_doc`` of the workload whose stored row is ``v`` (the same document,
    key for key and in the same order: tests/api/test_row_docs.py), without building the
    workload's objects (a page of 100: s14-page)."""
    args, env, labels, ports = workload_row_parts(v)
    return {
        "id": v[0],
        "version": v[1],
        "created_index": v[2],
        "spec": {
            "name": v[3],
            "image": v[4],
            "replicas": v[5],
            "args": args,
            "env": dict(zip(env[::2], env[1::2], strict=True)),
            "labels": dict(zip(labels[::2], labels[1::2], strict=True)),
            "resources": {"cpu_millis": v[6], "memory_bytes": v[7]},
            "ports": [
                {"container_port": ports[at], "protocol": ports[at + 1], "name": ports[at + 2]}
                for at in range(0, len(ports), 3)
            ],
        },
        "status": status_doc(st),
    }


def instance_doc(i: Instance) -> dict[str, Any]:
    return {
        "id": i.id,
        "workload_id": i.workload_id,
        "node_id": i.node_id,
        "status": i.status.value,
        "message": i.message,
        "version": i.version,
        "created_index": i.created_index,
    }


def node_doc(n: Node) -> dict[str, Any]:
    return {
        "id": n.id,
        "addresses": list(n.info.addresses),
        "capacity": resources_doc(n.info.capacity),
        "labels": _pairs(n.info.labels),
        "status": n.status.value,
        "version": n.version,
        "created_index": n.created_index,
    }
