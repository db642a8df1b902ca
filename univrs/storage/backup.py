"""Backup files (``univrs snapshot save|status|restore``): the format, streamed writing, checks.

A backup file is one state-machine snapshot of a running cluster with what is needed to trust
and to restore it::

    MAGIC (16 bytes)  u32 BE header length  header (strict CBOR map)
    data (header["size"] bytes: the snapshot exactly as nodes store it)
    sha256 (32 bytes) of everything above   END (16 bytes)

The header names the format, the cluster id, the index and term of the snapshot, the
membership in effect there (codec plain form), the node that served it and when. The trailer's
checksum covers the header and the data, so a flipped bit anywhere, a truncated file or a file
cut and glued together is refused. The node builds the stream (``stream_chunks``); the receiver
(``BackupReceiver``) checks every part as it arrives, holding at most one chunk in memory, and
writes ``FILE.tmp``, fsyncs it and renames it to ``FILE`` only once the trailer verified: a
``FILE`` that exists is whole.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import struct
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from univrs import codec
from univrs.errors import ProtocolError, StorageError
from univrs.raft.messages import Membership, SnapshotMeta
from univrs.sm.snapshot import restore_plain
from univrs.sm.state import ClusterStateMachine

MAGIC = b"univrs-snapshot\n"  # 16 bytes
END = b"univrs-snap-end\n"  # 16 bytes
FORMAT = 1
DIGEST_BYTES = 32
MAX_HEADER_BYTES = 1 << 20  # a header holds a membership: 1 MiB is far beyond any real one
MAX_DATA_BYTES = 1 << 34  # 16 GiB, as runtime.snapshots.MAX_SNAPSHOT_BYTES
CHUNK_BYTES = 1 << 20  # what the node sends (and the receiver reads) at a time
_PREFIX = struct.Struct(">I")


class BadBackup(StorageError):
    """A backup file (or stream) that is not whole or not ours: the message says what."""


@attrs.frozen(kw_only=True)
class BackupHeader:
    """What a backup file says about its snapshot."""

    cluster_id: str
    index: int
    term: int
    membership: Membership
    node: str  # the node that served it
    created_ms: int  # that node's wall clock when it began streaming
    size: int  # bytes of snapshot data
    version: str  # univrs version of the node
    format: int = FORMAT

    def meta(self) -> SnapshotMeta:
        return SnapshotMeta(index=self.index, term=self.term, membership=self.membership)

    def to_plain(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "cluster_id": self.cluster_id,
            "index": self.index,
            "term": self.term,
            "membership": codec.membership_to_plain(self.membership),
            "node": self.node,
            "created_ms": self.created_ms,
            "size": self.size,
            "version": self.version,
        }

    @classmethod
    def from_plain(cls, doc: Any) -> BackupHeader:
        """Parse a decoded header; ``BadBackup`` for anything unexpected."""
        if not isinstance(doc, dict):
            raise BadBackup("header: not a map")
        if doc.get("format") != FORMAT:
            raise BadBackup(f"header: format {doc.get('format')!r}, this build reads {FORMAT}")
        want: dict[str, type] = {
            "cluster_id": str,
            "index": int,
            "term": int,
            "node": str,
            "created_ms": int,
            "size": int,
            "version": str,
        }
        for key, kind in want.items():
            value: Any = doc.get(key)
            negative = isinstance(value, int) and value < 0
            if type(value) is not kind or negative:
                raise BadBackup(f"header: {key} is {value!r}")
        index, term, size = doc["index"], doc["term"], doc["size"]
        if index < 1 or term < 1 or size > MAX_DATA_BYTES:
            raise BadBackup(f"header: index {index}, term {term}, size {size}")
        unknown = sorted(set(doc) - set(want) - {"format", "membership"})
        if unknown:
            raise BadBackup(f"header: unknown field {unknown[0]!r}")
        try:
            membership = codec.membership_from_plain(doc.get("membership"))
        except ProtocolError as exc:
            raise BadBackup(f"header: {exc}") from None
        return cls(membership=membership, **{k: doc[k] for k in want})


def encode_header(header: BackupHeader) -> bytes:
    """MAGIC, the length prefix and the header: the first bytes of a backup file."""
    body = codec.encode_plain(header.to_plain())
    return MAGIC + _PREFIX.pack(len(body)) + body


def stream_chunks(header: BackupHeader, data: bytes, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The backup file as a sequence of chunks of at most ``chunk`` bytes (the data is sliced,
    never copied whole)."""
    assert len(data) == header.size
    digest = hashlib.sha256()
    head = encode_header(header)
    digest.update(head)
    yield head
    view = memoryview(data)
    for at in range(0, len(data), chunk):
        part = bytes(view[at : at + chunk])
        digest.update(part)
        yield part
    yield digest.digest() + END


@attrs.define(eq=False)
class _Parser:
    """Checks a backup byte stream incrementally: feed bytes, then ``finish``."""

    on_data: Any = None  # called with each piece of snapshot data, in order
    header: BackupHeader | None = None
    _digest: Any = attrs.field(factory=hashlib.sha256)
    _buffer: bytearray = attrs.field(factory=bytearray)
    _data_left: int = 0
    _stage: str = "magic"  # magic, header, data, trailer, done
    _header_len: int = 0
    received: int = 0

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        view = memoryview(chunk)
        while len(view):
            if self._stage == "data":
                take = min(self._data_left, len(view))
                part = view[:take]
                self._digest.update(part)
                if self.on_data is not None:
                    self.on_data(bytes(part))
                self._data_left -= take
                view = view[take:]
                if self._data_left == 0:
                    self._stage = "trailer"
                continue
            if self._stage == "done":
                raise BadBackup("bytes after the trailer")
            need = {
                "magic": len(MAGIC) + _PREFIX.size,
                "header": self._header_len,
                "trailer": DIGEST_BYTES + len(END),
            }[self._stage]
            take = min(need - len(self._buffer), len(view))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == need:
                self._advance(bytes(self._buffer))
                self._buffer.clear()

    def _advance(self, part: bytes) -> None:
        if self._stage == "magic":
            if part[: len(MAGIC)] != MAGIC:
                raise BadBackup("not a univrs snapshot file (bad magic)")
            (self._header_len,) = _PREFIX.unpack(part[len(MAGIC) :])
            if not 0 < self._header_len <= MAX_HEADER_BYTES:
                raise BadBackup(f"header length {self._header_len} out of range")
            self._digest.update(part)
            self._stage = "header"
        elif self._stage == "header":
            self._digest.update(part)
            try:
                doc = codec.decode_plain(part, max_size=MAX_HEADER_BYTES)
            except ProtocolError as exc:
                raise BadBackup(f"header does not decode: {exc}") from None
            self.header = BackupHeader.from_plain(doc)
            self._data_left = self.header.size
            self._stage = "data" if self._data_left else "trailer"
        else:  # trailer
            if part[DIGEST_BYTES:] != END:
                raise BadBackup("bad trailer (the file is cut or not a univrs snapshot)")
            if part[:DIGEST_BYTES] != self._digest.digest():
                raise BadBackup("sha256 mismatch: the file is corrupt")
            self._stage = "done"

    def finish(self) -> BackupHeader:
        if self._stage != "done" or self.header is None:
            raise BadBackup(f"truncated: the stream ended in its {self._stage} after "
                            f"{self.received} bytes")  # fmt: skip
        return self.header

    @property
    def sha256(self) -> str:
        hexdigest: str = self._digest.hexdigest()
        return hexdigest


@attrs.define(eq=False)
class BackupReceiver:
    """Writes a backup stream to ``path`` safely: ``path.tmp`` first, checked as it arrives,
    fsynced, renamed to ``path`` and the directory fsynced only once the trailer verified.
    Use as a context manager: leaving it without ``finish`` (an error) removes ``path.tmp``."""

    path: pathlib.Path
    _parser: _Parser = attrs.field(init=False)
    _file: Any = attrs.field(init=False, default=None)

    @property
    def tmp(self) -> pathlib.Path:
        return self.path.with_name(self.path.name + ".tmp")

    def __enter__(self) -> BackupReceiver:
        # The file holds the whole state (workload env values among it): private like the data
        # dir (0600; was 0644 by the umask). A leftover ``.tmp`` (an interrupted save, or a
        # symbolic link planted there) is removed, never written through.
        self.tmp.unlink(missing_ok=True)
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "wb")
        self._parser = _Parser()
        return self

    def feed(self, chunk: bytes) -> None:
        self._parser.feed(chunk)
        self._file.write(chunk)

    def finish(self) -> tuple[BackupHeader, str]:
        """Verify the end of the stream, make the file durable; (header, sha256 hex)."""
        header = self._parser.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return header, self._parser.sha256

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
            self.tmp.unlink(missing_ok=True)


@attrs.frozen(kw_only=True)
class BackupFile:
    """A verified backup file: its header, checksum and (when loaded) data."""

    header: BackupHeader
    sha256: str
    file_bytes: int
    data: bytes | None = None


def read_backup(path: str | os.PathLike[str], *, load: bool = True) -> BackupFile:
    """Read and verify a backup file (every byte against the trailer's checksum), streaming it;
    with ``load`` keep the snapshot data. ``BadBackup`` if it is not whole, ``StorageError``
    if it cannot be read."""
    parts: list[bytes] = []
    parser = _Parser(on_data=parts.append if load else None)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                parser.feed(chunk)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except BadBackup as exc:
        raise BadBackup(f"{path}: {exc}") from None
    try:
        header = parser.finish()
    except BadBackup as exc:
        raise BadBackup(f"{path}: {exc}") from None
    return BackupFile(
        header=header,
        sha256=parser.sha256,
        file_bytes=parser.received,
        data=b"".join(parts) if load else None,
    )


def decode_state(
    backup: BackupFile, into: Callable[[bytes], ClusterStateMachine] | None = None
) -> ClusterStateMachine:
    """The state machine in a loaded backup; ``BadBackup`` when it does not decode or does
    not sit at the header's index and term. ``into``: restored there instead of in memory
    (``StateEnv.stage``: a row at a time into an LMDB environment), with the same checks."""
    assert backup.data is not None
    try:
        if into is not None:
            sm = into(backup.data)
        else:
            plain = codec.decode_plain(backup.data, max_size=MAX_DATA_BYTES, max_depth=64)
            sm = restore_plain(plain)
    except (ProtocolError, ValueError, TypeError) as exc:
        raise BadBackup(f"the snapshot data is not a state machine: {exc}") from None
    h = backup.header
    if (sm.last_applied_index, sm.last_applied_term) != (h.index, h.term):
        raise BadBackup(
            f"the snapshot data is at ({sm.last_applied_index}, {sm.last_applied_term}), the "
            f"header says ({h.index}, {h.term})"
        )
    return sm


def describe(backup: BackupFile, sm: ClusterStateMachine | None) -> dict[str, Any]:
    """A plain description of a backup (``univrs snapshot status``)."""
    h = backup.header
    m = h.membership
    doc: dict[str, Any] = {
        "format": h.format,
        "cluster_id": h.cluster_id,
        "index": h.index,
        "term": h.term,
        "node": h.node,
        "created_ms": h.created_ms,
        "version": h.version,
        "voters": sorted(m.voters),
        "learners": sorted(m.learners),
        "incarnations": dict(m.incarnations),
        "data_bytes": h.size,
        "file_bytes": backup.file_bytes,
        "sha256": backup.sha256,
        "checksum": "ok",
    }
    if sm is not None:
        doc["objects"] = {
            "workloads": sum(1 for _ in sm.stored_workloads()),
            "instances": sum(1 for _ in sm.stored_instances()),
            "nodes": sum(1 for _ in sm.stored_nodes()),
            "balances": sum(1 for _ in sm.ledger_items()),
            "sessions": sum(1 for _ in sm.stored_sessions()),
        }
    return doc
