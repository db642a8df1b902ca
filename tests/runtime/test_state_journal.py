"""The session journal's LMDB layout (state format 3, s14-journal): a session is a head row plus
one row per cached response, so a keyed write stores the same bytes whatever its session's
window holds; an env of the layout before (format 1 or 2: all of a session's responses in its
one row) is upgraded when opened and keeps every cached answer; and the state (digest,
snapshot bytes, every response) is the old code's for the same commands, so replicas of both
versions never diverge.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

import cbor2
import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.runtime.state_envs import Clock, apply_next, old_layout
from univrs.errors import StorageError
from univrs.runtime.snapshots import capture
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
from univrs.sm.plain import response_to_plain
from univrs.sm.responses import Created, ErrorCode, Failure, Response, Success
from univrs.sm.sessions import SessionPolicy
from univrs.storage.sm_journal import STATE_FORMAT, _objects_on, response_bytes
from univrs.storage.sm_rows import read_small
from univrs.storage.sm_tables import StateEnv

POLICY = SessionPolicy(window=4, max_sessions=3, ttl_ms=50_000, max_sessions_per_owner=2)


def _keyed(client: str, seq: int, replicas: int, owner: str | None = None) -> Envelope:
    cmd = ScaleWorkload(id=f"w{replicas % 3}", replicas=replicas)
    return Envelope(command=cmd, client_id=client, seq=seq, owner=owner)


def history(sm: ClusterStateMachine, check: Any = lambda: None) -> list[Response]:
    """Every way a session changes: writes in order (the window slides), a gap filled, a
    retry, a seq below the window, a jump past the window, several writes of one session in one
    entry (some of whose responses fall out of the window in the same batch), a forged owner,
    evictions by the per-owner and the table's maxima, a close, expiry by the stamped time.
    ``check`` runs after every command."""
    clock, out = Clock(), []

    def run(cmd: Any, dt: int = 10) -> None:
        out.append(apply_next(sm, clock, cmd, dt))
        check()

    spec = WorkloadSpec(name="w", image="i:1")
    for k in range(3):
        run(CreateWorkload(id=f"w{k}", spec=spec))
    clients = []
    for owner in ("a", "b"):
        run(OpenSession(owner=owner))
        created = out[-1]
        assert isinstance(created, Created)
        clients.append(created.id)
    a, b = clients
    for seq in range(1, 11):
        run(_keyed(a, seq, seq, "a"))
    run(_keyed(a, 12, 5, "a"))
    run(_keyed(a, 11, 6, "a"))  # a gap in the window filled
    run(_keyed(a, 12, 5, "a"))  # a retry: the stored answer
    run(_keyed(a, 3, 1, "a"))  # below the window: stale-sequence
    run(_keyed(a, 30, 2, "b"))  # another owner: refused
    run(_keyed(b, 1, 2, "b"))
    run(_keyed(b, 40, 3, "b"))  # a jump past the window: the cache starts again
    clock.index += 1
    clock.time_ms += 10
    entry = [_keyed(a, seq, seq) for seq in range(13, 21)] + [_keyed(b, 41, 1)]
    out.extend(sm.apply_batch(entry, index=clock.index, term=1, time_ms=clock.time_ms))
    check()
    run(_keyed(a, 20, 20))  # a retry of the entry's last
    run(_keyed(a, 16, 20))  # in the window, cached by the entry
    for _ in range(3):  # owner a's second, third: its first evicted; then the table's maximum
        run(OpenSession(owner="a"))
    run(_keyed(a, 21, 1, "a"))  # evicted: session-expired
    extra = out[-2]
    assert isinstance(extra, Created)
    run(_keyed(extra.id, 1, 1, "a"))
    run(CloseSession(client_id=b, owner="b"))
    run(_keyed(extra.id, 2, 2, "a"), dt=60_000)  # the others expire by the stamped time
    run(_keyed(extra.id, 2, 2, "a"))
    return out


def _fingerprint(sm: ClusterStateMachine, responses: list[Response]) -> dict[str, str]:
    return {
        "digest": state_digest(sm),
        "snapshot": hashlib.sha256(capture(sm)()).hexdigest(),
        "responses": hashlib.sha256(repr(responses).encode()).hexdigest(),
    }


# ``history``'s state and answers with the code before this layout (main at b8dcc25, both
# backends): the snapshot and the digest are over the logical content, which did not change.
OLD_CODE = {
    "digest": "sha256:28371a61233803fb81bc5571228a17e531627d80d4939ed46205514e4824d58b",
    "snapshot": "0311fd3b72abf13bb19525706b83ac755c7916ba9e935adca372484ec7cfbde5",
    "responses": "4ad1f94d51248eb2b3725155047bcf8c173715eeace9cda700f4afbc9ba565db",
}


def _sessions(sm: ClusterStateMachine) -> list[tuple[Any, ...]]:
    return [
        (s.client_id, s.owner, s.last_index, s.last_ms, s.max_seq, list(s.responses.items()))
        for s in sm.stored_sessions()
    ]


def _stored(env: StateEnv, window: int = POLICY.window) -> list[tuple[Any, ...]]:
    with env.store.env.begin() as txn:
        sessions = read_small(txn, env.store, window)[0]
    return [
        (s.client_id, s.owner, s.last_index, s.last_ms, s.max_seq, list(s.responses.items()))
        for s in sessions
    ]


def test_both_backends_answer_and_digest_as_the_old_code(tmp_path: pathlib.Path) -> None:
    memory = ClusterStateMachine(policy=POLICY)
    in_memory = history(memory)
    assert memory.problems() == []
    assert _fingerprint(memory, in_memory) == OLD_CODE
    assert any(isinstance(r, Failure) and r.code is ErrorCode.STALE_SEQUENCE for r in in_memory)

    env = StateEnv(str(tmp_path / "state.lmdb"))
    on_disk = ClusterStateMachine(policy=POLICY, objects=_objects_on(env.store))
    # after every command, the stored rows read back are the sessions in memory
    stored = history(on_disk, lambda: _check_stored(env, on_disk))
    assert stored == in_memory
    assert _fingerprint(on_disk, stored) == OLD_CODE
    env.close()
    env = StateEnv(str(tmp_path / "state.lmdb"))
    resumed = env.load()
    assert _sessions(resumed) == _sessions(memory)
    assert state_digest(resumed) == OLD_CODE["digest"]
    env.close()


def _check_stored(env: StateEnv, sm: ClusterStateMachine) -> None:
    assert _stored(env) == _sessions(sm)


class _Counting:
    """A write transaction that counts the bytes put through it, its puts, and its deletes
    (through its cursors too: a cursor is how rows are deleted by range, and how the journal
    puts a batch's response rows at once, ``putmulti``, since round 18)."""

    def __init__(self, txn: lmdb.Transaction) -> None:
        self.txn = txn
        self.bytes = self.puts = self.deletes = 0

    def put(self, key: bytes, value: bytes, *args: Any, **kwargs: Any) -> bool:
        self.bytes += len(key) + len(value)
        self.puts += 1
        return bool(self.txn.put(key, value, *args, **kwargs))

    def delete(self, *args: Any, **kwargs: Any) -> bool:
        self.deletes += 1
        return bool(self.txn.delete(*args, **kwargs))

    def cursor(self, *args: Any, **kwargs: Any) -> _CountingCursor:
        return _CountingCursor(self, self.txn.cursor(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.txn, name)


class _CountingCursor:
    """A cursor of a ``_Counting`` transaction: its puts and deletes counted there."""

    def __init__(self, counting: _Counting, cursor: lmdb.Cursor) -> None:
        self.counting, self.cursor = counting, cursor

    def putmulti(self, items: Any, *args: Any, **kwargs: Any) -> Any:
        items = list(items)
        self.counting.puts += len(items)
        self.counting.bytes += sum(len(key) + len(value) for key, value in items)
        return self.cursor.putmulti(items, *args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> bool:
        self.counting.deletes += 1
        return bool(self.cursor.delete(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cursor, name)


def test_a_keyed_write_stores_the_same_bytes_whatever_the_window_holds(
    tmp_path: pathlib.Path,
) -> None:
    """The old layout re-stored the session's whole row (every cached response) per write:
    ~20 bytes more per response the window held, ~1.7 KB at 64."""
    env = StateEnv(str(tmp_path / "state.lmdb"))
    sm = env.load()  # the default window of 64
    flush = env.store.before_commit
    assert flush is not None
    put: list[int] = []
    ops: list[tuple[int, int]] = []  # (puts, deletes) per commit

    def counted(txn: lmdb.Transaction) -> None:
        counting = _Counting(txn)
        assert flush is not None
        flush(counting)  # type: ignore[arg-type]
        put.append(counting.bytes)
        ops.append((counting.puts, counting.deletes))

    clock = Clock()
    apply_next(sm, clock, CreateWorkload(id="w0", spec=WorkloadSpec(name="w", image="i:1")))
    created = apply_next(sm, clock, OpenSession())
    assert isinstance(created, Created)
    env.store.before_commit = counted
    for seq in range(1, 200):
        cmd = Envelope(command=ScaleWorkload(id="w0", replicas=1), client_id=created.id, seq=seq)
        apply_next(sm, clock, cmd)
    session = sm.session(created.id)
    assert session is not None and len(session.responses) == 64
    # the 30th write (30 cached responses after it), the 64th (64), the last (64, one
    # deleted): the same bytes (their indexes and seqs encode in as many bytes), and few
    assert put[29] == put[63] == put[-1] < 200, (put[29], put[63], put[-1])
    # format 4: a write is one put in the journal (its response row, in its slot; the other
    # put is meta's applied index), nothing deleted, whether the window is full or not
    # (format 3: head, activity key and response put, the old activity key and the response
    # that left the window deleted)
    assert set(ops) == {(2, 0)}, ops
    # a retry records nothing: its activity goes into the head row instead
    cmd = Envelope(command=ScaleWorkload(id="w0", replicas=1), client_id=created.id, seq=199)
    assert apply_next(sm, clock, cmd) == session.responses[199]
    assert ops[-1] == (2, 0)
    env.close()
    env = StateEnv(str(tmp_path / "state.lmdb"))
    resumed = env.load().session(created.id)
    assert resumed is not None
    assert (resumed.last_index, resumed.last_ms) == (session.last_index, session.last_ms)
    assert resumed.responses == session.responses
    env.close()


def _a_full_window(sm: ClusterStateMachine) -> tuple[list[str], list[Response]]:
    clock, answers = Clock(), []
    apply_next(sm, clock, CreateWorkload(id="w0", spec=WorkloadSpec(name="w", image="i:1")))
    clients = []
    for owner in ("a", "b"):
        created = apply_next(sm, clock, OpenSession(owner=owner))
        assert isinstance(created, Created)
        clients.append(created.id)
    for seq in range(1, 80):
        for client in clients:
            answers.append(apply_next(sm, clock, _keyed(client, seq, seq % 5)))
    return clients, answers


def test_an_env_of_the_layouts_before_keeps_every_cached_answer(tmp_path: pathlib.Path) -> None:
    for fmt in (1, 2, 3):
        path = str(tmp_path / f"f{fmt}" / "state.lmdb")
        env = StateEnv(path)
        sm = env.load()
        clients, answers = _a_full_window(sm)
        sessions, digest, index = _sessions(sm), state_digest(sm), sm.last_applied_index
        env.close()
        old_layout(path, fmt)

        env = StateEnv(path)
        upgraded = env.load()
        assert _sessions(upgraded) == sessions  # every cached answer, in seq order
        assert state_digest(upgraded) == digest
        assert upgraded.problems() == []
        with env.store.env.begin() as txn:
            meta = cbor2.loads(bytes(txn.get(b"state", db=env.store.db("meta")) or b""))
            assert meta[0] == STATE_FORMAT == 4
            assert txn.stat(env.store.db("session_responses"))["entries"] == 2 * 64
            assert txn.get(b"session_activity") is None  # dropped with the upgrade
        # a retry gets the stored answer; a seq below the window is stale
        clock = Clock()
        clock.index, clock.time_ms = index, upgraded.clock_ms
        for k, client in enumerate(clients):
            retried = apply_next(upgraded, clock, _keyed(client, 79, 79 % 5))
            assert retried == answers[-2 + k]
            stale = apply_next(upgraded, clock, _keyed(client, 15, 1))
            assert isinstance(stale, Failure) and stale.code is ErrorCode.STALE_SEQUENCE
        env.close()
        env = StateEnv(path)  # opened again: nothing to upgrade, the same sessions
        assert _sessions(env.load())[0][5] == sessions[0][5]
        env.close()


def test_a_session_opened_and_written_in_one_entry_is_stored_whole(
    tmp_path: pathlib.Path,
) -> None:
    """An entry that opens a session and writes with it (the id is the open's revision): the
    head row is written with the response rows (else the session would be stored as rows of
    no session, refused at the next open)."""
    env = StateEnv(str(tmp_path / "state.lmdb"))
    sm = env.load()
    clock = Clock()
    apply_next(sm, clock, CreateWorkload(id="w0", spec=WorkloadSpec(name="w", image="i:1")))
    index = clock.index + 1
    client = f"c{index}"  # the open's revision: the first command of the entry
    entry: list[Any] = [
        OpenSession(owner="a"),
        _keyed(client, 1, 3, "a"),
        _keyed(client, 2, 6, "a"),
    ]
    with sm.batch():  # one LMDB transaction, as the apply loop's
        answers = sm.apply_batch(entry, index=index, term=1, time_ms=clock.time_ms + 10)
    assert answers[0] == Created(id=client, version=index)
    assert all(not isinstance(a, Failure) for a in answers), answers
    assert _stored(env, 64) == _sessions(sm)
    env.close()
    env = StateEnv(str(tmp_path / "state.lmdb"))
    assert _sessions(env.load()) == _sessions(sm)
    env.close()


def test_a_response_row_out_of_its_slot_or_a_head_of_another_id_is_refused(
    tmp_path: pathlib.Path,
) -> None:
    path = str(tmp_path / "state.lmdb")
    env = StateEnv(path)
    sm = env.load()
    clients, _ = _a_full_window(sm)
    env.close()
    key = clients[0].encode()
    for damage, message in (
        ("slot", "not in its seq.s slot"),
        ("head", "the client id is not its key"),
    ):
        raw = lmdb.open(path, max_dbs=16)
        with raw.begin(write=True) as txn:
            if damage == "slot":
                db = raw.open_db(b"session_responses", txn=txn)
                cursor = txn.cursor(db=db)
                assert cursor.set_range(key + b"\0")
                row = bytes(cursor.value())
                cursor.delete()
                seq = int.from_bytes(row[:8], "big")  # moved to the next slot: not its own
                txn.put(key + b"\0" + ((seq + 1) % 64).to_bytes(8, "big"), row, db=db)
            else:
                db = raw.open_db(b"sessions", txn=txn)
                head = cbor2.loads(bytes(txn.get(key, db=db) or b""))
                head[1] = clients[1]
                txn.put(key, cbor2.dumps(head), db=db)
        raw.close()
        env = StateEnv(path)
        with pytest.raises(StorageError, match=message):
            env.load()
        env.close()


def test_response_rows_of_no_session_are_refused(tmp_path: pathlib.Path) -> None:
    """A response row left behind (a dropped session's range not deleted) is found at open."""
    path = str(tmp_path / "state.lmdb")
    env = StateEnv(path)
    sm = env.load()
    _a_full_window(sm)
    env.close()
    raw = lmdb.open(path, max_dbs=16)
    with raw.begin(write=True) as txn:
        db = raw.open_db(b"session_responses", txn=txn)
        txn.put(b"gone\0" + (1).to_bytes(8, "big"), cbor2.dumps({"ok": True}), db=db)
    raw.close()
    env = StateEnv(path)
    with pytest.raises(StorageError, match="responses hold rows of no session"):
        env.load()
    env.close()


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 2), st.integers(-6, 9), st.integers(1, 4)), max_size=60
    ),
    close=st.integers(0, 60),
)
def test_the_stored_sessions_are_the_ones_in_memory_after_every_batch(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, int, int]], close: int
) -> None:
    """Random keyed writes of three sessions (seqs ahead, in the window, retried, below it,
    far past it), in entries of one to four commands (an entry is one LMDB batch), one session
    closed on the way: the rows read back from LMDB are the sessions in memory every time."""
    env = StateEnv(str(tmp_path_factory.mktemp("journal") / "state.lmdb"))
    sm = ClusterStateMachine(policy=POLICY, objects=_objects_on(env.store))
    memory = ClusterStateMachine(policy=POLICY)
    clock = Clock()
    clients = []
    setup = [CreateWorkload(id="w0", spec=WorkloadSpec(name="w", image="i:1"))]
    for cmd in setup + [OpenSession()] * 3:
        clock.index += 1
        clock.time_ms += 10
        got = sm.apply(cmd, index=clock.index, term=1, time_ms=clock.time_ms)
        assert memory.apply(cmd, index=clock.index, term=1, time_ms=clock.time_ms) == got
        if isinstance(got, Created):
            clients.append(got.id)
    top = dict.fromkeys(clients, 0)
    for n, (who, delta, size) in enumerate(steps):
        client = clients[who]
        entry: list[Any] = []
        for _ in range(size):
            seq = max(1, top[client] + (40 if delta == 9 else delta))
            top[client] = max(top[client], seq)
            entry.append(_keyed(client, seq, seq % 3))
        clock.index += 1
        clock.time_ms += 10
        if n == close:
            entry = [CloseSession(client_id=client)]
        with sm.batch():  # an entry is one LMDB transaction, as in the apply loop
            answers = sm.apply_batch(entry, index=clock.index, term=1, time_ms=clock.time_ms)
        assert (
            memory.apply_batch(entry, index=clock.index, term=1, time_ms=clock.time_ms) == answers
        )
        assert _stored(env) == _sessions(sm) == _sessions(memory)
    assert state_digest(sm) == state_digest(memory)
    env.close()


@settings(max_examples=200, deadline=None)
@given(
    version=st.one_of(
        st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]),
        st.integers(0, 2**64 - 1),
    ),
    message=st.text(max_size=20),
)
def test_a_response_row_holds_the_responses_plain_cbor(version: int, message: str) -> None:
    """``response_bytes`` (a ``Success`` encoded without cbor2) gives ``cbor2.dumps`` of the
    response's plain form, so a row reads back as the response (and as format 3 stored it)."""
    for response in (
        Success(version=version),
        Created(id="c1", version=version),
        Failure(code=ErrorCode.NOT_FOUND, message=message, current_version=version or None),
    ):
        assert response_bytes(response) == cbor2.dumps(response_to_plain(response))


def test_an_env_opened_by_a_build_of_format_3_still_opens(tmp_path: pathlib.Path) -> None:
    """A build of format 3 refuses a format-4 env but creates its ``session_activity`` on the
    way (its constructor opens every database it knows): this build then opens it as before."""
    path = str(tmp_path / "state.lmdb")
    env = StateEnv(path)
    sm = env.load()
    _a_full_window(sm)
    sessions = _sessions(sm)
    env.close()
    raw = lmdb.open(path, max_dbs=16)
    raw.open_db(b"session_activity")  # what the older build's constructor leaves
    raw.close()
    env = StateEnv(path)
    assert _sessions(env.load()) == sessions
    env.close()
