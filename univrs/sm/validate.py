"""Argument checks run by ``apply`` before it changes anything.

Each ``*_problem`` function returns None when the value is acceptable, or a short message that
becomes an ``invalid-argument`` response. They check types too (``type(x) is int``, never a
bool), so ``apply`` stays total even for a command built in Python with wrong types; the plain
decoders already refuse wrong types for anything read from the log.

The limits are part of the replicated semantics: changing one changes which commands succeed,
so every replica must run the same limits (change them only with a new command format).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from univrs.sm.model import (
    InstanceSpec,
    NodeInfo,
    Port,
    PortProtocol,
    Resources,
    WorkloadSpec,
)

MAX_ID_LEN = 128
MAX_NAME_LEN = 253
MAX_IMAGE_LEN = 1024
MAX_REPLICAS = 100_000
MAX_ARGS = 256
MAX_ENV = 1024
MAX_LABELS = 256
MAX_PORTS = 64
MAX_ADDRESSES = 16
MAX_TEXT_LEN = 4096  # args, env values, messages, reasons, addresses
MAX_LABEL_VALUE_LEN = 253
MAX_QUANTITY = 2**63 - 1  # resources and credit amounts fit a signed 64-bit integer
MAX_VERSION = 2**63 - 1

# Ids: letters, digits and a few separators (uuids, node names, base64/hex public keys), no
# slash or whitespace so they are safe in URLs and storage keys.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]*")
# Workload names: DNS-1123 subdomain style, as orchestrator users know from Kubernetes.
_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_LABEL_KEY_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?")
_PORT_NAME_RE = re.compile(r"([a-z0-9]([a-z0-9-]*[a-z0-9])?)?")


def shown(value: object, limit: int = 64) -> str:
    """A value for an error message, the same on every replica: the repr of plain values,
    only the type name of anything else (a default repr holds a memory address)."""
    if value is None or type(value) in (str, int, bool, float):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    return f"<{type(value).__name__}>"


def is_int(value: object) -> bool:
    """True for a real int (``bool`` is refused although it subclasses int)."""
    return type(value) is int


def id_problem(what: str, value: object) -> str | None:
    """Problem with an object, node, peer or client id."""
    if type(value) is not str:
        return f"{what} must be a string"
    if not 0 < len(value) <= MAX_ID_LEN or _ID_RE.fullmatch(value) is None:
        return (
            f"{what} {shown(value)} must be 1-{MAX_ID_LEN} characters of letters, "
            "digits and ._:@+=- starting with a letter or digit"
        )
    return None


# Ids that ``id_problem`` passed. Its verdict depends on the string alone (``what`` only names
# the field in the message), and the same ids come back in every command and request (a
# session's client id, the objects a client writes), so a passed id is checked once, not at
# every write (rounds 18 and 19). The one memo of the process: the state machine's
# ``client_id_problem`` and the API's ``read_id`` and ``existing_id`` (univrs/api) share it.
# Only exact ``str`` values go in (a subclass is never remembered nor looked up); bounded:
# emptied when full.
VALID_IDS: set[str] = set()
VALID_IDS_KEPT = 4096


def remembered_id_problem(what: str, value: object) -> str | None:
    """``id_problem(what, value)``, remembered for the ids it passes."""
    if type(value) is str and value in VALID_IDS:
        return None
    problem = id_problem(what, value)
    if problem is None:
        if len(VALID_IDS) >= VALID_IDS_KEPT:
            VALID_IDS.clear()
        VALID_IDS.add(value)  # type: ignore[arg-type]
    return problem


def client_id_problem(value: object) -> str | None:
    """``id_problem("client_id", value)``, remembered for the ids it passes."""
    return remembered_id_problem("client_id", value)


def text_problem(what: str, value: object, max_len: int = MAX_TEXT_LEN) -> str | None:
    """Problem with free text: a string of at most ``max_len`` characters, no NUL."""
    if type(value) is not str:
        return f"{what} must be a string"
    if len(value) > max_len:
        return f"{what} is longer than {max_len} characters"
    if "\x00" in value:
        return f"{what} contains a NUL character"
    return None


def version_problem(value: object) -> str | None:
    """Problem with an optional expected version."""
    if value is None or (type(value) is int and 0 <= value <= MAX_VERSION):
        return None
    return "expected_version must be a non-negative integer or absent"


def quantity_problem(what: str, value: object, *, minimum: int = 0) -> str | None:
    """Problem with an integer amount in [minimum, MAX_QUANTITY]."""
    if not is_int(value):
        return f"{what} must be an integer"
    assert isinstance(value, int)
    if not minimum <= value <= MAX_QUANTITY:
        return f"{what} must be between {minimum} and {MAX_QUANTITY}, got {value}"
    return None


def replicas_problem(value: object) -> str | None:
    """Problem with a replica count."""
    if not is_int(value):
        return "replicas must be an integer"
    assert isinstance(value, int)
    if not 0 <= value <= MAX_REPLICAS:
        return f"replicas must be between 0 and {MAX_REPLICAS}, got {value}"
    return None


def _pairs_problem(
    what: str,
    pairs: object,
    max_items: int,
    key_re: re.Pattern[str],
    max_key: int,
    max_value: int,
) -> str | None:
    if type(pairs) is not tuple:
        return f"{what} must be a tuple of (key, value) pairs"
    if len(pairs) > max_items:
        return f"{what} has more than {max_items} entries"
    previous: str | None = None
    for pair in pairs:
        if type(pair) is not tuple or len(pair) != 2:
            return f"{what} must hold (key, value) pairs"
        key, value = pair
        if type(key) is not str or not 0 < len(key) <= max_key or key_re.fullmatch(key) is None:
            return f"{what} key {shown(key)} is not a valid key"
        if key == previous:
            return f"{what} key {key!r} appears twice"
        previous = key
        problem = text_problem(f"{what} value of {key!r}", value, max_value)
        if problem:
            return problem
    return None


def _strings_problem(what: str, values: object, max_items: int) -> str | None:
    if type(values) is not tuple:
        return f"{what} must be a tuple of strings"
    if len(values) > max_items:
        return f"{what} has more than {max_items} entries"
    for value in values:
        problem = text_problem(what, value)
        if problem:
            return problem
    return None


def resources_problem(what: str, value: object) -> str | None:
    """Problem with a ``Resources`` value."""
    if type(value) is not Resources:
        return f"{what} must be Resources"
    return quantity_problem(f"{what}.cpu_millis", value.cpu_millis) or quantity_problem(
        f"{what}.memory_bytes", value.memory_bytes
    )


def _ports_problem(ports: object) -> str | None:
    if type(ports) is not tuple:
        return "ports must be a tuple of Port"
    if len(ports) > MAX_PORTS:
        return f"ports has more than {MAX_PORTS} entries"
    seen: set[tuple[int, str]] = set()
    names: set[str] = set()
    for port in ports:
        if type(port) is not Port:
            return "ports must be a tuple of Port"
        number = port.container_port
        if not is_int(number) or not 1 <= number <= 65535:
            return f"port number {shown(number)} must be between 1 and 65535"
        if not isinstance(port.protocol, PortProtocol):
            return f"port protocol {shown(port.protocol)} must be one of tcp, udp, sctp"
        if (number, port.protocol) in seen:
            return f"port {number}/{port.protocol} appears twice"
        seen.add((number, port.protocol))
        name = port.name
        if type(name) is not str or len(name) > 15 or _PORT_NAME_RE.fullmatch(name) is None:
            return f"port name {shown(name)} must be up to 15 lowercase letters/digits/-"
        if name and name in names:
            return f"port name {name!r} appears twice"
        names.add(name)
    return None


def workload_spec_problem(spec: object) -> str | None:
    """Problem with a ``WorkloadSpec``."""
    if type(spec) is not WorkloadSpec:
        return "spec must be a WorkloadSpec"
    name = spec.name
    if type(name) is not str or not 0 < len(name) <= MAX_NAME_LEN or not _NAME_RE.fullmatch(name):
        return (
            f"name {shown(name)} must be 1-{MAX_NAME_LEN} lowercase letters, "
            "digits, '-' or '.', starting and ending with a letter or digit"
        )
    image = spec.image
    if type(image) is not str or not image or len(image) > MAX_IMAGE_LEN:
        return f"image must be a non-empty string of at most {MAX_IMAGE_LEN} characters"
    if any(c.isspace() or not c.isprintable() for c in image):
        return "image must not contain whitespace or control characters"
    return (
        replicas_problem(spec.replicas)
        or _strings_problem("args", spec.args, MAX_ARGS)
        or _pairs_problem("env", spec.env, MAX_ENV, _ENV_KEY_RE, 256, MAX_TEXT_LEN)
        or _pairs_problem(
            "labels", spec.labels, MAX_LABELS, _LABEL_KEY_RE, 253, MAX_LABEL_VALUE_LEN
        )
        or resources_problem("resources", spec.resources)
        or _ports_problem(spec.ports)
    )


def instance_spec_problem(spec: object) -> str | None:
    """Problem with an ``InstanceSpec`` (existence of referenced objects is checked later)."""
    if type(spec) is not InstanceSpec:
        return "spec must be an InstanceSpec"
    problem = id_problem("workload_id", spec.workload_id)
    if problem is None and spec.node_id is not None:
        problem = id_problem("node_id", spec.node_id)
    return problem


def node_info_problem(info: object) -> str | None:
    """Problem with a ``NodeInfo``."""
    if type(info) is not NodeInfo:
        return "info must be a NodeInfo"
    return (
        id_problem("node id", info.id)
        or _addresses_problem(info.addresses)
        or resources_problem("capacity", info.capacity)
        or _pairs_problem(
            "labels", info.labels, MAX_LABELS, _LABEL_KEY_RE, 253, MAX_LABEL_VALUE_LEN
        )
    )


def _addresses_problem(addresses: object) -> str | None:
    problem = _strings_problem("addresses", addresses, MAX_ADDRESSES)
    if problem:
        return problem
    assert isinstance(addresses, Iterable)
    for address in addresses:
        if not address or any(c.isspace() for c in address):
            return f"address {address!r} must be non-empty without whitespace"
    return None
