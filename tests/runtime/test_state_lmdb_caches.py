"""The LMDB state backend's caches (docs/performance.md, "The LMDB state backend's cost per
write"): the decoded objects an ``LmdbTable`` keeps, and the session rows the journal
remembers, never answer anything the environment does not hold.

* a batch that is aborted (or a write outside a batch that fails) leaves no value it wrote in
  the cache; each such test also runs with ``LmdbStore.invalidate`` disabled and shows the
  stale value it then reads, so the check is seen to catch the bug;
* a bounded cache answers every key, evicted or not, and tables on one database share it;
* a session row built from remembered response encodings is byte for byte the row
  ``cbor2.dumps`` writes (hypothesis), and a state applied through the caches resumes from
  the environment with the digest of an in-memory replica, the session activity index exact.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from univrs.sm import (
    CloseSession,
    ClusterStateMachine,
    CreateWorkload,
    Envelope,
    OpenSession,
    ScaleWorkload,
    WorkloadSpec,
    state_digest,
)
from univrs.sm.commands import Command, DeleteWorkload
from univrs.storage.sm_store import LmdbStore, LmdbTable
from univrs.storage.sm_tables import StateEnv


@pytest.fixture
def store(tmp_path: pathlib.Path) -> Iterator[LmdbStore]:
    s = LmdbStore(str(tmp_path / "env"), sync=False, map_size=1 << 24)
    yield s
    s.close()


def _table(store: LmdbStore, cache_size: int = 16) -> LmdbTable[int]:
    return LmdbTable(
        store, "t", lambda v: str(v).encode(), lambda raw: int(raw), cache_size=cache_size
    )


class Boom(Exception):
    pass


def _abort_a_batch(store: LmdbStore, table: LmdbTable[int]) -> None:
    table.put("a", 1)
    table.put("b", 2)
    with pytest.raises(Boom), store.batch():
        table.put("a", 10)  # replaces a cached value
        table.put("c", 30)  # a new one
        table.pop("b")
        assert table.get("a") == 10 and table.get("c") == 30 and "b" not in table
        raise Boom


def _after_abort(table: LmdbTable[int]) -> tuple[int | None, int | None, int | None]:
    return table.get("a"), table.get("b"), table.get("c")


def test_an_aborted_batch_leaves_nothing_it_wrote_in_the_cache(store: LmdbStore) -> None:
    table = _table(store)
    _abort_a_batch(store, table)
    assert _after_abort(table) == (1, 2, None)
    assert sorted(table.keys()) == ["a", "b"]


def test_without_invalidation_the_aborted_values_would_be_read(
    store: LmdbStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above catches the bug: with ``invalidate`` a no-op the cache answers what
    the aborted transaction wrote (and misses what it removed)."""
    monkeypatch.setattr(LmdbStore, "invalidate", lambda self: None)
    table = _table(store)
    _abort_a_batch(store, table)
    assert _after_abort(table) == (10, 2, 30)


def test_a_failed_write_outside_a_batch_leaves_nothing_in_the_cache(store: LmdbStore) -> None:
    table = _table(store)
    table.put("a", 1)
    with pytest.raises(Boom), store.writing() as txn:
        txn.put(b"a", b"5", db=store.db("t"))  # written around the table
        raise Boom
    assert table.get("a") == 1


def test_a_bounded_cache_answers_every_key_and_is_shared_per_database(store: LmdbStore) -> None:
    table, other = _table(store, cache_size=3), _table(store, cache_size=3)
    with store.batch():
        for k in range(20):
            table.put(f"k{k:02d}", k)
    for k in range(20):
        assert table.get(f"k{k:02d}") == k
        assert f"k{k:02d}" in table
    other.put("k05", 500)  # through another table on the same database
    assert table.get("k05") == 500
    assert table.pop("k05") == 500
    assert other.get("k05") is None and "k05" not in table
    assert table.put("k19", 190) == 19  # the replaced value, cached or read back
    assert table.put("k00", 1) == 0
    assert len(table) == 19
    uncached = _table(store, cache_size=0)
    assert uncached.get("k19") == 190 and uncached.put("k19", 191) == 190


def test_a_remembered_absence_is_the_databases_and_touches_no_page(
    store: LmdbStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``remember_absent`` (the counts rows: most workloads have none): an absent key read
    once is answered from the cache, and every write through any table on the database, an
    aborted batch and a write around the tables leave the cache answering what is stored."""
    table = LmdbTable(
        store, "t", lambda v: str(v).encode(), lambda raw: int(raw), remember_absent=True
    )
    other = _table(store)  # the same database, absences not remembered
    assert table.get("x") is None
    monkeypatch.setattr(LmdbStore, "reading", lambda self: pytest.fail("read a page"))
    assert table.get("x") is None and "x" not in table  # from the cache
    with pytest.raises(KeyError):
        table.pop("x")
    monkeypatch.undo()
    assert other.put("x", 7) is None  # through the other table: the absence forgotten
    assert table.get("x") == 7 and "x" in table
    assert table.pop("x") == 7
    assert table.get("x") is None and other.get("x") is None
    assert table.put("x", 8) is None  # over a remembered absence: written, nothing read back
    assert other.get("x") == 8 and table.get("x") == 8
    assert table.pop("x") == 8 and table.get("x") is None
    with pytest.raises(Boom), store.batch():
        table.put("x", 9)
        assert table.get("x") == 9
        raise Boom
    assert table.get("x") is None and sorted(table.keys()) == []
    with store.writing() as txn:  # around the tables, then invalidated as the env does
        txn.put(b"x", b"3", db=store.db("t"))
    store.invalidate()
    assert table.get("x") == 3


def _commands(sessions: list[str]) -> Iterator[Command | Envelope]:
    spec = WorkloadSpec(name="w", image="i:1")
    seqs = dict.fromkeys(sessions, 0)
    for k in range(600):
        client = sessions[k % len(sessions)]
        seqs[client] += 1
        seq = seqs[client]
        if k % 97 == 0:
            yield Envelope(command=DeleteWorkload(id=f"w{k % 7}"), client_id=client, seq=seq)
        elif k % 5 == 0:
            yield CreateWorkload(id=f"w{k % 7}", spec=spec)
        else:
            cmd = ScaleWorkload(id=f"w{k % 7}", replicas=k % 4)
            yield Envelope(command=cmd, client_id=client, seq=seq)
            if k % 11 == 0:  # a retry: answered from the session, not applied again
                yield Envelope(command=cmd, client_id=client, seq=seq)


def test_a_state_applied_through_the_caches_resumes_with_the_same_digest(
    tmp_path: pathlib.Path,
) -> None:
    env = StateEnv(str(tmp_path / "state"))
    on_disk, in_memory = env.load(), ClusterStateMachine()
    index = 0
    sessions: list[str] = []
    for _ in range(3):
        index += 1
        ids = {sm.apply(OpenSession(), index=index, term=1) for sm in (on_disk, in_memory)}
        assert len(ids) == 1
        sessions.append(ids.pop().id)  # type: ignore[union-attr]
    commands = list(_commands(sessions))
    for start in range(0, len(commands), 13):  # entries of 13 commands, 3 entries per batch
        if start % 39 == 0 and start:
            index += 1
            closing = CloseSession(client_id=sessions[start % 3])
            for sm in (on_disk, in_memory):
                sm.apply(closing, index=index, term=1)
        index += 1
        chunk = commands[start : start + 13]
        with on_disk.batch():
            on_disk.apply_batch(chunk, index=index, term=1)
        in_memory.apply_batch(chunk, index=index, term=1)
        assert state_digest(on_disk) == state_digest(in_memory)
    env.close()
    resumed_env = StateEnv(str(tmp_path / "state"))
    resumed = resumed_env.load()  # checks the activity index against the sessions
    assert state_digest(resumed) == state_digest(in_memory)
    assert resumed.last_applied_index == index
    resumed_env.close()


def test_the_apply_benchmark_runs_both_backends_to_the_same_digest() -> None:
    """scripts/bench_state_apply.py (docs/performance.md, "Round 8, continued"), tiny: on
    both backends every measured command changed the state (40 creates, 300 scales: a bench
    whose writes were refused, or deduplicated as retries, would time nothing), to the same
    revision (4 sessions opened, 8 workloads created first) and the same digest."""
    script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_state_apply.py"
    args = ["--repeats", "1", "--commands", "300", "--creates", "40", "--workloads", "8"]
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["digests_equal"] is True
    for backend in ("memory", "lmdb"):
        assert summary[backend]["changed"] == [40 + 300], backend
        assert summary[backend]["revision"] == [4 + 8 + 40 + 300], backend
