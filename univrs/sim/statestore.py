"""The simulated state machine persisted in LMDB (``Simulation(state_backend="lmdb")``,
``python -m univrs.sim --state-backend lmdb``), with the node's rules for its persistent state
(univrs/server/statedir.py, docs/state-at-scale.md):

* **One transaction per applied chunk**, holding the keys and sessions the chunk changed and
  the applied index, term, revision and configuration (``commit``): the stored state always
  reflects exactly entries 1..applied.
* **Not fsynced per commit** (``sync=False``, as the node's ``state.lmdb``): a process crash
  keeps every commit, a machine crash may lose those since the last ``sync``. ``sync`` runs
  where the node forces its env to disk: once the node's own snapshot is durable, before the
  log is compacted below it. A crash in the simulation is a machine crash for the state with
  probability ``LOSE_UNSYNCED`` (its own RNG): the env goes back to its last synced image.
* **Start-up** resumes from the env's applied index ``A`` when ``A`` is at or past the stored
  snapshot (the core is told ``applied = A``; only the log after it is replayed), replaces it
  from the stored snapshot when it is behind, and treats an env ahead of the durable log, or
  of another term at ``A``, as a violated invariant (the node refuses to start on it): the
  runtime must never let the state get ahead of the durable log.
* **An install** from the leader replaces the state in one transaction once the snapshot is
  durable on the disk (the node's apply loop waits for the writer before it adopts).

The environments live in one temporary directory per simulation (one per data dir: a wiped
node gets a new one), removed by ``close``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable

import lmdb

from univrs.raft.messages import decode_membership, encode_membership
from univrs.sim.kv import KvStore

LOSE_UNSYNCED = 0.5  # share of crashes that lose the state's commits since the last sync
MAP_SIZE = 1 << 26


class SimStateEnv:
    """One simulated data dir's persistent state machine (see the module docstring)."""

    def __init__(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.env = lmdb.open(path, map_size=MAP_SIZE, max_dbs=4, sync=False, metasync=False)
        self._kv = self.env.open_db(b"kv")
        self._sessions = self.env.open_db(b"sessions")
        self._meta = self.env.open_db(b"meta")
        self._synced: bytes | None = None  # the image at the last sync (None: empty)
        self.commits = 0
        self.rollbacks = 0

    def applied(self) -> tuple[int, int]:
        """(index, term) the stored state reflects ((0, 0): empty)."""
        with self.env.begin() as txn:
            raw = txn.get(b"state", db=self._meta)
        if raw is None:
            return 0, 0
        doc = json.loads(bytes(raw))
        return int(doc["applied"]), int(doc["term"])

    def commit(self, kv: KvStore, keys: Iterable[str], clients: Iterable[int]) -> None:
        """Store what a chunk of applied entries changed, with the applied index, in one
        write transaction."""
        with self.env.begin(write=True) as txn:
            for key in keys:
                txn.put(key.encode(), kv.data[key].encode(), db=self._kv)
            for client in clients:
                txn.put(b"%d" % client, json.dumps(kv.sessions[client]).encode(), db=self._sessions)
            txn.put(b"state", _meta(kv), db=self._meta)
        self.commits += 1

    def replace(self, kv: KvStore) -> None:
        """Replace the whole stored state by ``kv``'s (a snapshot), in one transaction."""
        with self.env.begin(write=True) as txn:
            _fill(txn, self, kv)
        self.commits += 1

    def load(self, factory: Callable[[], KvStore]) -> KvStore:
        """The state machine as last committed."""
        kv = factory()
        with self.env.begin() as txn:
            raw = txn.get(b"state", db=self._meta)
            if raw is None:
                return kv
            doc = json.loads(bytes(raw))
            kv.data = {bytes(k).decode(): bytes(v).decode() for k, v in txn.cursor(db=self._kv)}
            kv.sessions = {
                int(bytes(c)): tuple(json.loads(bytes(v))) for c, v in txn.cursor(db=self._sessions)
            }
        kv.applied, kv.applied_term = int(doc["applied"]), int(doc["term"])
        kv.revision, kv.config_index = int(doc["revision"]), int(doc["config_index"])
        kv.config = decode_membership(bytes.fromhex(doc["config"]))
        return kv

    def sync(self) -> None:
        """Force the commits to disk: a later machine crash goes back no further than this."""
        self.env.sync(True)
        self._synced = self._image()

    def crash(self, lose_unsynced: bool) -> bool:
        """The process died (``lose_unsynced``: with its machine): the commits since the last
        ``sync`` are lost in the second case. Whether any commit was lost."""
        if not lose_unsynced or self._image() == self._synced:
            return False
        self.rollbacks += 1
        with self.env.begin(write=True) as txn:
            for db in (self._kv, self._sessions, self._meta):
                txn.drop(db, delete=False)
            if self._synced is not None:
                doc = json.loads(self._synced)
                for k, v in doc["kv"].items():
                    txn.put(k.encode(), v.encode(), db=self._kv)
                for c, v in doc["sessions"].items():
                    txn.put(c.encode(), v.encode(), db=self._sessions)
                txn.put(b"state", doc["meta"].encode(), db=self._meta)
        return True

    def _image(self) -> bytes:
        with self.env.begin() as txn:
            raw = txn.get(b"state", db=self._meta)
            doc = {
                "kv": {bytes(k).decode(): bytes(v).decode() for k, v in txn.cursor(db=self._kv)},
                "sessions": {
                    bytes(c).decode(): bytes(v).decode() for c, v in txn.cursor(db=self._sessions)
                },
                "meta": None if raw is None else bytes(raw).decode(),
            }
        return json.dumps(doc, sort_keys=True).encode()

    def close(self) -> None:
        self.env.close()


def _meta(kv: KvStore) -> bytes:
    doc = {
        "applied": kv.applied,
        "term": kv.applied_term,
        "revision": kv.revision,
        "config_index": kv.config_index,
        "config": encode_membership(kv.config).hex(),
    }
    return json.dumps(doc, sort_keys=True).encode()


def _fill(txn: lmdb.Transaction, env: SimStateEnv, kv: KvStore) -> None:
    for db in (env._kv, env._sessions):
        txn.drop(db, delete=False)
    for key, value in kv.data.items():
        txn.put(key.encode(), value.encode(), db=env._kv)
    for client, session in kv.sessions.items():
        txn.put(b"%d" % client, json.dumps(session).encode(), db=env._sessions)
    txn.put(b"state", _meta(kv), db=env._meta)


class SimStateDirs:
    """The temporary directory holding every data dir's state env of one simulation."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="univrs-sim-state.")
        self.envs: list[SimStateEnv] = []

    def new(self, name: str) -> SimStateEnv:
        """A new, empty state env (a new data dir)."""
        env = SimStateEnv(os.path.join(self.root, name))
        self.envs.append(env)
        return env

    def close(self) -> None:
        """Close every env and remove the directory."""
        for env in self.envs:
            env.close()
        self.envs.clear()
        shutil.rmtree(self.root, ignore_errors=True)
