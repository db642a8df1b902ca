"""A received snapshot staged in one pass: its rows checked as decoded rows and stored as they
come, without building objects (``staged_plain``; docs/state-at-scale.md, eighth increment).

The full path (``sm_stream.streamed_plain`` then ``restore_plain``) walks the snapshot's
top-level map twice (the first walk decodes every row to find where the next key starts),
builds every row into objects with every check, encodes each object back into its row and
puts it with its index pairs: about 15 us of CPU per object. A snapshot written by a node
(``snapshot_plain``, or the stored rows spliced by ``runtime.snapshots``) is canonical: its
keys come in the writer's order, its rows in id order, each row in the writer's form. This
path reads such a snapshot in one walk and, for each row as it is decoded (in blocks of
``STOP_EVERY`` rows since s14-join: decoded, checked, encoded, put, a block at a time):

* checks it is canonical (``univrs.sm.snapshot_canon``: every check of the row reader, and
  the form the writer gives; node rows, a hundredth of the rows, go through the reader and
  the writer and must come back equal);
* stores ``cbor2.dumps(row)``, which is then what the full path would store for it, with an
  append (LMDB's ``MDB_APPEND``: the key must be above every key in the table, so a repeated
  id, or ids out of order, fail the append). The block is encoded in one call; when that is
  the block's bytes as received, each row's received bytes are its ``dumps`` and are stored
  (``_Stager.encoded``);
* for an instance, checks its workload is in the table (the workloads come first in the
  map) and puts its index pairs; the nodes it names are checked once all nodes are in;
* counts the instances of each workload by status and writes the ``workload_counts`` rows
  (derived data, not in the snapshot: s14-page): one row per run of instances of the same
  workload, appended (or merged with the row already there when the runs are not in
  workload order), so memory stays one row.

All of it in one write transaction, committed only when the whole map was read, with the
format and version checked. Anything else (a row not canonical, ids out of order, keys in
another order, a decoding error, a key LMDB refuses) aborts that transaction, and the caller
takes the full path from the start, which accepts the snapshot (a valid one in another form)
or refuses it with its own message. So this path adds no acceptance: it accepts only what
the full path accepts, and stores the same bytes (tests/runtime/test_state_ingest.py). The
small values (header, sessions, ledger, tokens) are decoded strictly and handed to
``restore_plain`` with the row lists as ``StagedRows``, which checks them as before.

A check whose result would not be used any more (``snapshot_format.check_stop``, set by the
runtime's check: univrs/runtime/checking.py) stops between two blocks of rows by raising
``CheckStopped``: the transaction is aborted as for any failure, but the full path is not
tried (s13-scale).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import cbor2
import lmdb

from univrs.sm.objects import StagedRows
from univrs.sm.snapshot import _node_row, _node_v1
from univrs.sm.snapshot_canon import canonical_instance_row, canonical_workload_row
from univrs.sm.snapshot_format import (
    SNAPSHOT_FORMAT,
    STOP_EVERY,
    CheckStopped,
    check_stop,
    gc_paused,
)
from univrs.storage.sm_store import COUNTS_ROW, SEP, LmdbStore
from univrs.storage.sm_stream import _ROW_KEYS, walk_plain

_VERSION = 1  # the format version whose rows this path knows
_INDEX_BATCH = 1 << 16  # index keys sorted and put together (instance_rows)
_SLOT = {"pending": 0, "running": 1, "succeeded": 2, "failed": 3, "unknown": 4}  # Counts
# Rows decoded, checked, encoded and put together (s14-join): a block's objects stay in the
# CPU's caches between the steps (at 1M, blocks of 4,096 rows took 15 % more CPU than 256).
_AT_ONCE = 256


class _NotCanonical(Exception):
    """This snapshot is not for the one-pass path (the full path decides)."""


class _Stager:
    """The rows of one snapshot going into one write transaction."""

    def __init__(self, txn: lmdb.Transaction, store: LmdbStore, data: bytes):
        self.txn = txn
        self.data = data  # the snapshot whose rows the decoders read
        self.workloads, self.instances = store.db("workloads"), store.db("instances")
        self.nodes = store.db("nodes")
        self.by_workload, self.by_node = store.db("by_workload"), store.db("by_node")
        self.counts = store.db("workload_counts")
        # Counts rows waiting to be appended (``put_counts``), and the highest key taken.
        self.pending_counts: list[tuple[bytes, bytes]] = []
        self.last_counted = b""
        self.node_refs: set[str | None] = set()  # instances' nodes (checked at the end)
        self.done: set[str] = set()
        self.stop = check_stop.get()  # the check's stop, polled between blocks of rows

    def blocks(self, count: int) -> Iterator[int]:
        """``count`` rows as blocks of at most ``_AT_ONCE``, the check's stop polled before
        every ``STOP_EVERY`` rows: ``CheckStopped`` is raised there once it is set
        (s13-scale: a check whose result would not be used stops within a block, not at the
        end of a minute's staging)."""
        for start in range(0, count, STOP_EVERY):  # lazily: ``count`` is the data's word
            self.poll()
            end = min(start + STOP_EVERY, count)
            for at in range(start, end, _AT_ONCE):
                yield min(_AT_ONCE, end - at)

    def read_block(self, decoder: cbor2.CBORDecoder, block: int) -> tuple[list[Any], list[int]]:
        """The next ``block`` rows decoded, and where each ends in ``data``: row ``k`` is
        ``data[ends[k]:ends[k + 1]]``."""
        decode, tell = decoder.decode, decoder.fp.tell
        rows: list[Any] = []
        ends = [tell()]
        add_row, add_end = rows.append, ends.append
        for _ in range(block):
            add_row(decode())
            add_end(tell())
        return rows, ends

    def encoded(self, rows: list[Any], ends: list[int]) -> list[bytes]:
        """What the tables keep for ``rows`` (checked, decoded from ``data[ends[0]:
        ends[-1]]``, row ``k`` from ``ends[k]`` to ``ends[k + 1]``): each row's shortest
        encoding, ``cbor2.dumps(row)``. The block is encoded in one call and compared with
        its bytes as received: when they are the same (a node's snapshot: always), each
        row's received bytes are its shortest encoding (no row's bytes are shorter than
        its shortest encoding, and they add up to the same length) and are kept as they
        came; otherwise each row is encoded on its own (s14-join: one encoding call per
        block, not per row)."""
        data, start, end = self.data, ends[0], ends[-1]
        block = cbor2.dumps(rows)
        if len(block) - (end - start) == _array_head_len(len(rows)) and block.endswith(
            data[start:end]
        ):
            return [data[a:b] for a, b in pairwise(ends)]
        return list(map(cbor2.dumps, rows))

    def poll(self) -> None:
        if self.stop is not None and self.stop():
            raise CheckStopped

    def rows(
        self, key: str, count: int, decoder: cbor2.CBORDecoder, plain: dict[str, Any]
    ) -> StagedRows:
        """``sm_stream.walk_plain``'s row reader: stores the ``count`` rows of ``key``."""
        if plain.get("format") != SNAPSHOT_FORMAT or plain.get("version") != _VERSION:
            raise _NotCanonical  # the header comes first; these are version 1's rows
        if key == "workloads":
            self.workload_rows(decoder, count)
        elif key == "instances":
            self.instance_rows(decoder, count)
        else:
            self.node_rows(decoder, count)
        return StagedRows(count)

    def workload_rows(self, decoder: cbor2.CBORDecoder, count: int) -> None:
        check = canonical_workload_row
        append = self.txn.cursor(db=self.workloads).putmulti
        for block in self.blocks(count):
            # A block at a time: its rows decoded, checked, then put with one call (LMDB's
            # append of each pair: a repeated id, or ids out of order, is not added). Per
            # row, the loop's Python is the cost once the rest is C (s14-join).
            rows, ends = self.read_block(decoder, block)
            if not all(map(check, rows)):
                raise _NotCanonical
            keys = [row[0].encode() for row in rows]
            _, added = append(zip(keys, self.encoded(rows, ends), strict=True), append=True)
            if added != len(rows):
                raise _NotCanonical
        self.done.add("workloads")

    def instance_rows(self, decoder: cbor2.CBORDecoder, count: int) -> None:
        if "workloads" not in self.done:
            raise _NotCanonical  # its references could not be checked as the rows come
        check = canonical_instance_row
        append = self.txn.cursor(db=self.instances).putmulti
        by_workload = self.txn.cursor(db=self.by_workload).putmulti
        workload_in = self.txn.cursor(db=self.workloads).set_key
        node_refs = self.node_refs
        # The index pairs by node come in the instances' order, not the index's: put one at
        # a time they are random inserts into a growing tree (at 300,000 instances 0.6 s of
        # CPU and 1 to 2 s of wall for the three puts of a row, against 0.4 s and 0.5 s
        # sorted; docs/state-at-scale.md, fifteenth increment). So they are put in sorted
        # batches of ``_INDEX_BATCH`` keys (bounded memory). The pairs by workload come
        # sorted when instance ids follow their workloads' (a node's snapshot of instances
        # created by scaling): appended then, else put where they go.
        node_keys: list[bytes] = []
        run_of, run = b"", [0, 0, 0, 0, 0]  # the counts of the current run of one workload
        slot, pending, pack = _SLOT, self.pending_counts, COUNTS_ROW.pack
        for block in self.blocks(count):
            rows, ends = self.read_block(decoder, block)
            if not all(map(check, rows)):
                raise _NotCanonical
            idents = [row[0].encode() for row in rows]
            _, added = append(zip(idents, self.encoded(rows, ends), strict=True), append=True)
            if added != len(rows):
                raise _NotCanonical  # an id repeated or out of order
            workload_ids = [row[1].encode() for row in rows]
            if not all(map(workload_in, set(workload_ids))):
                raise _NotCanonical  # an instance of a workload the snapshot does not hold
            for workload_id, row in zip(workload_ids, rows, strict=True):
                if workload_id != run_of:
                    if run_of > self.last_counted and len(pending) < _INDEX_BATCH:
                        pending.append((run_of, pack(*run)))  # ``put_counts``, inlined
                        self.last_counted = run_of
                    elif run_of:
                        self.put_counts(run_of, run)
                    run_of, run = workload_id, [0, 0, 0, 0, 0]
                run[slot[row[3]]] += 1
            pairs = [(w + SEP + i, b"") for w, i in zip(workload_ids, idents, strict=True)]
            consumed, added = by_workload(pairs, append=True)
            if added != consumed:
                by_workload(sorted(pairs))  # out of order: each where it goes (puts again)
            node_ids = [row[2] for row in rows]
            node_refs.update(node_ids)
            node_keys += [
                n.encode() + SEP + i for n, i in zip(node_ids, idents, strict=True) if n is not None
            ]
            if len(node_keys) >= _INDEX_BATCH:
                self.put_index(node_keys, self.by_node)
        if run_of:
            self.put_counts(run_of, run)
        self.flush_counts()
        self.put_index(node_keys, self.by_node)
        self.done.add("instances")

    def put_counts(self, workload_id: bytes, counts: list[int]) -> None:
        """Add a run's counts to the workload's row. Runs in workload order (the common case:
        instance ids that follow their workloads') are collected and appended together
        (``MDB_APPEND``, ``_INDEX_BATCH`` rows a call); a run out of that order first puts
        those, then is merged with the row there."""
        pending = self.pending_counts
        if workload_id > self.last_counted:
            pending.append((workload_id, COUNTS_ROW.pack(*counts)))
            self.last_counted = workload_id
            if len(pending) >= _INDEX_BATCH:
                self.flush_counts()
            return
        self.flush_counts()
        db = self.counts
        there = self.txn.get(workload_id, db=db)
        if there is not None:
            counts = [a + b for a, b in zip(counts, COUNTS_ROW.unpack(there), strict=True)]
        self.txn.put(workload_id, COUNTS_ROW.pack(*counts), db=db)

    def flush_counts(self) -> None:
        """Append the collected counts rows (all above every row in the table)."""
        if self.pending_counts:
            self.txn.cursor(db=self.counts).putmulti(self.pending_counts, append=True)
            self.pending_counts.clear()

    def put_index(self, keys: list[bytes], db: Any) -> None:
        """Put the index ``keys`` (empty values) into ``db`` in key order; empties ``keys``."""
        if keys:
            keys.sort()
            self.txn.cursor(db=db).putmulti([(key, b"") for key in keys])
            keys.clear()

    def node_rows(self, decoder: cbor2.CBORDecoder, count: int) -> None:
        decode, put, dumps, db = decoder.decode, self.txn.put, cbor2.dumps, self.nodes
        for n in range(count):
            row = decode()
            if _node_row(_node_v1(row, f"nodes[{n}]")) != row or not put(
                row[0].encode(), dumps(row), db=db, append=True
            ):
                raise _NotCanonical
        self.done.add("nodes")

    def check_references(self) -> None:
        get, nodes = self.txn.get, self.nodes
        self.node_refs.discard(None)  # an instance on no node
        if any(get(node_id.encode(), db=nodes) is None for node_id in self.node_refs):  # type: ignore[union-attr]
            raise _NotCanonical


def _array_head_len(n: int) -> int:
    """Bytes of the shortest head of a CBOR array of ``n`` items."""
    return 1 if n < 24 else 2 if n < 1 << 8 else 3 if n < 1 << 16 else 5 if n < 1 << 32 else 9


def staged_plain(data: bytes, store: LmdbStore) -> dict[str, Any] | None:
    """Read snapshot ``data`` in one walk, writing its object rows into ``store``'s empty
    object tables and indexes as they come (see the module docstring); returns its plain data
    with the row lists as ``StagedRows``, for ``restore_plain`` on ``store``'s tables. None
    when the snapshot is not canonical, is malformed or broken: nothing was written then,
    and the full path decides. The tables' databases must be open (``store.db``) already:
    this holds a write transaction."""
    txn = store.env.begin(write=True)
    try:
        stager = _Stager(txn, store, data)
        with gc_paused():
            plain = walk_plain(data, stager.rows)
        if stager.done != set(_ROW_KEYS):
            raise _NotCanonical
        stager.check_references()
    except BaseException as exc:
        txn.abort()
        if isinstance(exc, Exception):  # _NotCanonical, a decoding error, lmdb's errors, ...
            return None
        raise
    txn.commit()
    return plain
