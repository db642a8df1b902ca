"""The start counter of a data dir and the starts it accepted of its peers (univrs/raft/starts.py).

Two records in the log store's meta database (docs/storage.md):

* ``start``: ``[incarnation, counter, [boot id, ...]]``, this data dir's newest start. A node
  calls ``begin_start`` once per start, before its transport sends anything: the write commits
  (fsync) before it returns, so every hello names a start that is durable. A record of another
  incarnation (``univrs recover`` gave the data dir a new one) counts as none: each
  incarnation counts its own starts from 1. The offline tools never call it.
* ``starts``: ``[[member id, incarnation, counter, boot id], ...]``, the newest start accepted
  per peer incarnation (``StartBook``), written (fsync) before a connection whose hello moved
  it delivers anything.

Keys of their own: a build from before them ignores both (and then announces and checks none).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from univrs.raft.starts import BOOT_RE, CHAIN, Records, Start, valid_start
from univrs.storage import layout
from univrs.storage.datadir import LOST_STATE_HINT
from univrs.storage.layout import Corrupt

if TYPE_CHECKING:
    from univrs.storage.env import Txn
    from univrs.storage.log_store import LogStore

KEY_START = b"start"
KEY_STARTS = b"starts"

# A damaged record of starts cannot be rebuilt (the counter and the peers' records are what
# tell this data dir from a copy of it): the node refuses to start and says what to do.
_DAMAGED_HINT = (
    ": the start counters of this data dir are damaged, so it cannot tell itself from an "
    'older copy of itself (docs/security.md, "Older copies of a data dir")' + LOST_STATE_HINT
)


def _decode(key: bytes, raw: bytes) -> Any:
    try:
        return layout.decode_record(key, raw)
    except Corrupt as exc:
        raise Corrupt(f"{exc}{_DAMAGED_HINT}") from None


def new_boot() -> str:
    """A fresh boot id: 16 random hex characters (64 bits), one per start."""
    return secrets.token_hex(8)


def _parse_start(obj: Any, incarnation: str) -> Start | None:
    if (
        type(obj) is not list
        or len(obj) != 3
        or type(obj[0]) is not str
        or type(obj[1]) is not int
        or type(obj[2]) is not list
        or not all(type(b) is str for b in obj[2])
    ):
        raise Corrupt(f"metadata record 'start': malformed{_DAMAGED_HINT}")
    if obj[0] != incarnation:
        return None  # another incarnation's: this one has not started yet
    start = Start(counter=obj[1], boots=tuple(obj[2]))
    if not valid_start(start):
        raise Corrupt(f"metadata record 'start': malformed{_DAMAGED_HINT}")
    return start


def stored_start(store: LogStore) -> Start | None:
    """The newest start of ``store``'s incarnation (None: it never started)."""
    env = store._env  # the storage package's own

    def read(txn: Txn) -> Start | None:
        raw = txn.get(KEY_START, db=env.meta)
        if raw is None:
            return None
        return _parse_start(_decode(KEY_START, raw), store.incarnation)

    return env.read(read)


def begin_start(store: LogStore, boot: str | None = None) -> Start:
    """Count one more start of ``store``'s data dir (boot id ``boot``, default a fresh one)
    and make it durable before returning it."""
    env = store._env
    boot = new_boot() if boot is None else boot
    incarnation = store.incarnation

    def write(txn: Txn) -> Start:
        raw = txn.get(KEY_START, db=env.meta)
        old = None if raw is None else _parse_start(_decode(KEY_START, raw), incarnation)
        start = Start(counter=1, boots=(boot,)) if old is None else old.following(boot)
        record = [incarnation, start.counter, list(start.boots[-CHAIN:])]
        txn.put(KEY_START, layout.encode_record(KEY_START, record), db=env.meta)
        return start

    return env.write(write)


def load_start_records(store: LogStore) -> Records:
    """The peers' starts ``store`` accepted (``StartBook``'s records), in recorded order."""
    env = store._env

    def read(txn: Txn) -> Records:
        raw = txn.get(KEY_STARTS, db=env.meta)
        if raw is None:
            return {}
        obj = _decode(KEY_STARTS, raw)
        out: Records = {}
        if type(obj) is not list:
            raise Corrupt(f"metadata record 'starts': malformed{_DAMAGED_HINT}")
        for item in obj:
            if (
                type(item) is not list
                or len(item) != 4
                or not all(type(x) is str and x for x in (item[0], item[1], item[3]))
                or type(item[2]) is not int
                or item[2] < 1
                or not BOOT_RE.fullmatch(item[3])
            ):
                raise Corrupt(f"metadata record 'starts': malformed{_DAMAGED_HINT}")
            out[(item[0], item[1])] = (item[2], item[3])
        return out

    return env.read(read)


def save_start_records(store: LogStore, records: Records) -> None:
    """Make ``records`` the stored peers' starts (one durable write)."""
    env = store._env
    value = layout.encode_record(
        KEY_STARTS, [[n, inc, c, b] for (n, inc), (c, b) in records.items()]
    )
    env.write(lambda txn: txn.put(KEY_STARTS, value, db=env.meta))
