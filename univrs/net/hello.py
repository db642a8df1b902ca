"""The hello: the first frame on every raft connection, naming the sender and its cluster.

Its encoding is deliberately separate from the message codec and frozen across releases: a
node must be able to read the hello of any other version to refuse it with a clear reason. It
is a CBOR map ``{"hello": "univrs-raft", "version": int, "cluster": str, "src": str, "dst": str}``
plus optional keys; a decoder ignores keys it does not know, so adding an optional key keeps
every version able to read every other's hello. ``dst`` is the node the dialer believes it
reached; a receiver with another id refuses the connection (a stale address after a membership
change must not deliver messages to the wrong node).

Optional keys:

* ``addr`` (str ``host:port``): the raft address the dialer advertises, i.e. where it can be
  dialed back. A receiver uses it only to answer a member that is sending it entries while its
  own configuration does not (yet) list that member (a joiner whose log is still old).
"""

from __future__ import annotations

from typing import Any

import attrs
import cbor2

from univrs.errors import ProtocolError
from univrs.net.address import split_host_port

WIRE_VERSION = 1
"""Version of the raft wire protocol (hello + codec). Bump on incompatible codec changes."""

_MAGIC = "univrs-raft"
_MAX_HELLO_SIZE = 4096


@attrs.frozen(kw_only=True)
class Hello:
    """The dialer's introduction: wire version, cluster id, its node id, the node it wants,
    and (optionally) the raft address it can be dialed back at."""

    version: int
    cluster: str
    src: str
    dst: str
    addr: str | None = None


def encode_hello(hello: Hello) -> bytes:
    """The frame bytes of ``hello``."""
    doc = {
        "hello": _MAGIC,
        "version": hello.version,
        "cluster": hello.cluster,
        "src": hello.src,
        "dst": hello.dst,
    }
    if hello.addr is not None:
        doc["addr"] = hello.addr
    return cbor2.dumps(doc)


def decode_hello(data: bytes | str) -> Hello:
    """Parse a hello frame; raises ProtocolError (saying what is wrong) on anything else."""
    if isinstance(data, str):
        raise ProtocolError("expected a binary hello frame, got a text frame")
    if len(data) > _MAX_HELLO_SIZE:
        raise ProtocolError(f"hello frame of {len(data)} bytes exceeds {_MAX_HELLO_SIZE}")
    try:
        doc: Any = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on garbage; all mean "malformed"
        raise ProtocolError(f"malformed hello frame: {exc}") from None
    if not isinstance(doc, dict) or doc.get("hello") != _MAGIC:
        raise ProtocolError("first frame is not a univrs raft hello")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError("hello has no integer version")
    fields = {}
    for key in ("cluster", "src", "dst"):
        value = doc.get(key)
        if not isinstance(value, str) or not value:
            raise ProtocolError(f"hello field {key!r} is missing or not a non-empty string")
        fields[key] = value
    addr = doc.get("addr")
    if addr is not None:
        try:
            split_host_port(addr)
        except ValueError as exc:
            raise ProtocolError(f"hello field 'addr': {exc}") from None
    return Hello(version=version, addr=addr, **fields)
