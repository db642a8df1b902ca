"""The hello: the first frame on every raft connection, naming the sender and its cluster.

Its encoding is deliberately separate from the message codec and frozen across releases: a
node must be able to read the hello of any other version to refuse it with a clear reason. It
is a CBOR map ``{"hello": "univrs-raft", "version": int, "cluster": str, "src": str, "dst": str}``
with optional keys (absent when unknown); a decoder ignores keys it does not know, so adding
an optional key keeps every version able to read every other's hello:

* ``incarnation``: the incarnation of the sender's data dir (see ``Membership.incarnations``);
* ``expect``: the incarnation the dialer expects ``dst`` to have, per its configuration;
* ``addr`` (``host:port``): the raft address the dialer advertises, i.e. where it can be dialed
  back. A receiver uses it only to answer a member that is sending it entries while its own
  configuration does not (yet) list that member (a joiner whose log is still old);
* ``cfg``: the log index of the sender's newest configuration, and ``bound`` (true or absent):
  whether that configuration binds the sender's id to the sender's own incarnation. A listing
  is only as fresh as the configuration it comes from: a receiver whose configuration is older
  than the one binding the sender is the stale side, so it accepts the sender's incarnation
  (and a dialer with an older configuration than the one binding the receiver may expect an
  incarnation the receiver no longer has). See ``RaftTransport``;
* ``batch`` (true or absent): the sender reads batch frames (several messages in one frame,
  ``univrs.codec.encode_batch``) on the connections it accepts. A node sends batch frames to
  a peer only once that peer's hello said so: a node of an older version never gets one;
* ``payload`` (an integer from 1 to 65535; absent: 1): the newest log entry payload version
  the sender applies (univrs/runtime/payload.py). A leader packs batch entries (version 2)
  only while every member announced 2 (univrs/runtime/capabilities.py). Any other value (not
  an integer, out of range) is a malformed hello: the connection is refused like any other.
* ``hold`` (milliseconds, an integer from 0 to 2^31 - 1; absent: 0): with ``[raft]
  read_lease`` on, how long at least the sender refuses votes after it last heard from a
  leader (and after it starts): ``(election ticks min - 1) x tick``; 0 with leases off, when it
  grants votes by the ordinary rule. A leader serves lease reads only while every member
  announced a hold at least its own (univrs/runtime/capabilities.py ``lease_gate``, s14-audit).
* ``start`` (``[counter, [boot id, ...]]``): the sender's start counter (bumped and made
  durable at each start before anything is sent) and the boot ids of its last starts, newest
  last (univrs/raft/starts.py). A receiver refuses a hello from an older copy of a data dir
  than one it heard (``CLOSE_STALE_START``). A malformed value is a malformed hello.
* ``seen`` (``[incarnation, counter, boot id]``): the newest start of ``dst`` the dialer
  recorded. A receiver of that incarnation whose own start chain does not hold it is an
  older copy of its data dir: it stops taking part before it reads a message (it would
  otherwise take commit indexes the leader derived from the original's acknowledgements).

``dst`` is the node the dialer believes it reached; a receiver with another id refuses the
connection (a stale address after a membership change must not deliver messages to the wrong
node), and so does a receiver whose incarnation is not the one ``expect`` names (the node at
that address is a new data dir under the old id, a stranger to the dialer's configuration).
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import cbor2

from univrs.codec.strict import load
from univrs.errors import ProtocolError
from univrs.net.address import split_host_port
from univrs.raft.starts import BOOT_RE, MAX_COUNTER, Start, valid_start

WIRE_VERSION = 1
"""Version of the raft wire protocol (hello + codec). Bump on incompatible codec changes."""

_MAGIC = "univrs-raft"
_MAX_HELLO_SIZE = 4096
# A hello is a flat map of about ten fields: decoded strictly (no tags, no duplicate keys, no
# indefinite lengths), nested and itemised within generous bounds for fields to come.
_MAX_HELLO_DEPTH = 8
_MAX_HELLO_ITEMS = 256
_MAX_INCARNATION = 64
# An incarnation is 16 hex characters (``LogStore.incarnation``); a hello's is logged, named
# in close reasons and recorded in the configuration by the leader: ASCII letters, digits,
# '.', '_' and '-' only, never control characters.
# A log index (the sender's configuration's) fits the codec's unsigned 64-bit range.
_MAX_INDEX = 2**63 - 1
_MAX_PAYLOAD_VERSION = 0xFFFF
_MAX_HOLD_MS = 2**31 - 1
_INCARNATION_RE = re.compile(rf"[A-Za-z0-9._-]{{1,{_MAX_INCARNATION}}}")


@attrs.frozen(kw_only=True)
class Hello:
    """The dialer's introduction: wire version, cluster id, its node id, the node it wants,
    its own incarnation and the incarnation it expects of ``dst`` (None: unknown/unbound), and
    the raft address it can be dialed back at (None: not given)."""

    version: int
    cluster: str
    src: str
    dst: str
    incarnation: str | None = None
    expect: str | None = None
    addr: str | None = None
    config_index: int = 0
    bound: bool = False
    batch: bool = False  # the sender reads batch frames
    payload: int = 1  # the newest entry payload version the sender applies
    hold: int = 0  # ms the sender refuses votes after hearing a leader (read leases; 0: off)
    start: Start | None = None  # the sender's start (None: an older build announces none)
    seen: tuple[str, int, str] | None = None  # dst's newest start the sender recorded


def valid_incarnation(incarnation: str) -> bool:
    """Whether ``incarnation`` is one a hello may name (1-64 letters, digits, '.', '_', '-')."""
    return _INCARNATION_RE.fullmatch(incarnation) is not None


def encode_hello(hello: Hello) -> bytes:
    """The frame bytes of ``hello``."""
    doc: dict[str, Any] = {
        "hello": _MAGIC,
        "version": hello.version,
        "cluster": hello.cluster,
        "src": hello.src,
        "dst": hello.dst,
    }
    if hello.incarnation is not None:
        doc["incarnation"] = hello.incarnation
    if hello.expect is not None:
        doc["expect"] = hello.expect
    if hello.addr is not None:
        doc["addr"] = hello.addr
    if hello.config_index:
        doc["cfg"] = hello.config_index
    if hello.bound:
        doc["bound"] = True
    if hello.batch:
        doc["batch"] = True
    if hello.payload != 1:
        doc["payload"] = hello.payload
    if hello.hold:
        doc["hold"] = hello.hold
    if hello.start is not None:
        doc["start"] = [hello.start.counter, list(hello.start.boots)]
    if hello.seen is not None:
        doc["seen"] = list(hello.seen)
    return cbor2.dumps(doc)


def decode_hello(data: bytes | str) -> Hello:
    """Parse a hello frame; raises ProtocolError (saying what is wrong) on anything else."""
    if isinstance(data, str):
        raise ProtocolError("expected a binary hello frame, got a text frame")
    if len(data) > _MAX_HELLO_SIZE:
        raise ProtocolError(f"hello frame of {len(data)} bytes exceeds {_MAX_HELLO_SIZE}")
    doc: Any = load(
        data,
        max_size=_MAX_HELLO_SIZE,
        max_depth=_MAX_HELLO_DEPTH,
        what="hello frame",
        max_items=_MAX_HELLO_ITEMS,
    )
    if not isinstance(doc, dict) or doc.get("hello") != _MAGIC:
        raise ProtocolError("first frame is not a univrs raft hello")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError("hello has no integer version")
    fields: dict[str, str] = {}
    for key in ("cluster", "src", "dst"):
        value = doc.get(key)
        if not isinstance(value, str) or not value:
            raise ProtocolError(f"hello field {key!r} is missing or not a non-empty string")
        fields[key] = value
    optional: dict[str, str | None] = {}
    for key in ("incarnation", "expect"):
        value = doc.get(key)
        if value is not None and (
            not isinstance(value, str) or not _INCARNATION_RE.fullmatch(value)
        ):
            raise ProtocolError(
                f"hello field {key!r} is not 1-{_MAX_INCARNATION} letters, digits, '.', '_' or '-'"
            )
        optional[key] = value
    addr = doc.get("addr")
    if addr is not None:
        try:
            split_host_port(addr)
        except ValueError as exc:
            raise ProtocolError(f"hello field 'addr': {exc}") from None
    cfg = doc.get("cfg", 0)
    if not isinstance(cfg, int) or isinstance(cfg, bool) or not 0 <= cfg <= _MAX_INDEX:
        raise ProtocolError(f"hello field 'cfg' is not an index in [0, {_MAX_INDEX}]")
    bound = doc.get("bound", False)
    if not isinstance(bound, bool):
        raise ProtocolError("hello field 'bound' is not a boolean")
    batch = doc.get("batch", False)
    if not isinstance(batch, bool):
        raise ProtocolError("hello field 'batch' is not a boolean")
    payload = doc.get("payload", 1)
    if (
        not isinstance(payload, int)
        or isinstance(payload, bool)
        or not 1 <= payload <= _MAX_PAYLOAD_VERSION
    ):
        raise ProtocolError(
            f"hello field 'payload' is not an integer in [1, {_MAX_PAYLOAD_VERSION}]"
        )
    hold = doc.get("hold", 0)
    if not isinstance(hold, int) or isinstance(hold, bool) or not 0 <= hold <= _MAX_HOLD_MS:
        raise ProtocolError(f"hello field 'hold' is not an integer in [0, {_MAX_HOLD_MS}]")
    return Hello(
        version=version,
        start=_decode_start(doc.get("start")),
        seen=_decode_seen(doc.get("seen")),
        cluster=fields["cluster"],
        src=fields["src"],
        dst=fields["dst"],
        incarnation=optional["incarnation"],
        expect=optional["expect"],
        addr=addr,
        config_index=cfg,
        bound=bound,
        batch=batch,
        payload=payload,
        hold=hold,
    )


def _decode_seen(raw: object) -> tuple[str, int, str] | None:
    if raw is None:
        return None
    if (
        isinstance(raw, list)
        and len(raw) == 3
        and type(raw[0]) is str
        and _INCARNATION_RE.fullmatch(raw[0])
        and type(raw[1]) is int
        and 1 <= raw[1] <= MAX_COUNTER
        and type(raw[2]) is str
        and BOOT_RE.fullmatch(raw[2])
    ):
        return raw[0], raw[1], raw[2]
    raise ProtocolError("hello field 'seen' is not [incarnation, counter, boot id]")


def _decode_start(raw: object) -> Start | None:
    if raw is None:
        return None
    if (
        isinstance(raw, list)
        and len(raw) == 2
        and type(raw[0]) is int
        and isinstance(raw[1], list)
        and all(type(b) is str for b in raw[1])
    ):
        start = Start(counter=raw[0], boots=tuple(raw[1]))
        if valid_start(start):
            return start
    raise ProtocolError(
        "hello field 'start' is not [counter, [boot id, ...]] (a counter from 1, at most 16 "
        "boot ids of 16 hex digits, no more than the counter)"
    )
