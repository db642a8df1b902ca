"""The state machine persisted in LMDB (``univrs.storage.sm_tables.StateEnv``): what a node
reopens is exactly what it committed, batch by batch, and equals the in-memory state.

* random command sequences applied in random batches: reopening the environment after any
  batch gives the same state (digest, invariants) as the live state machine and as an
  in-memory replica that applied the same commands, and goes on identically;
* a batch that raises leaves the stored state as it was before the batch;
* ``replace`` (a snapshot installed) swaps the whole state in one transaction;
* order is a function of the state, not of its history (session eviction between owners
  holding as many sessions; cached responses in seq order), so a restored replica evicts the
  same session as one that never restarted.
"""

from __future__ import annotations

import pathlib
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.sm.helpers import small_policy
from tests.sm.strategies import Client, steps
from tests.sm.test_sm_properties import SETTINGS, check_invariants, policy
from univrs.errors import StorageError
from univrs.sm import (
    ClusterStateMachine,
    Created,
    Envelope,
    MintCredits,
    OpenSession,
    restore_plain,
    snapshot_plain,
    state_digest,
)
from univrs.storage.sm_tables import StateEnv


def _env(folder: pathlib.Path, name: str = "state") -> StateEnv:
    return StateEnv(str(folder / name), map_size=1 << 26)


def _fresh(folder: pathlib.Path, name: str, pol: Any) -> tuple[StateEnv, ClusterStateMachine]:
    env = _env(folder, name)
    empty = env.load()
    assert empty.last_applied_index == 0
    return env, env.replace(ClusterStateMachine(pol))  # the policy is part of the state


@given(script=steps, data=st.data())
@SETTINGS
def test_reopening_after_any_batch_gives_the_state_committed(
    tmp_path_factory: pytest.TempPathFactory, script: list[Any], data: Any
) -> None:
    folder = tmp_path_factory.mktemp("persist")
    env, sm = _fresh(folder, "state", policy())
    memory = ClusterStateMachine(policy())
    client = Client()
    index = 0
    while index < len(script):
        size = data.draw(st.integers(1, 8), label="batch")
        with sm.batch():
            for command, wrap, delta in script[index : index + size]:
                index += 1
                time_ms = client.time(delta)
                sent = client.envelope(command, wrap, sm)
                response = sm.apply(sent, index=index, term=1, time_ms=time_ms)
                assert memory.apply(sent, index=index, term=1, time_ms=time_ms) == response
                client.learn(sent, response)
        if data.draw(st.booleans(), label="reopen"):
            env.close()
            env = _env(folder)
            sm = env.load()
            check_invariants(sm)
        assert state_digest(sm) == state_digest(memory)
        assert env.applied() == (memory.last_applied_index, memory.last_applied_term)
    assert cbor2.dumps(snapshot_plain(sm)) == cbor2.dumps(snapshot_plain(memory))
    env.close()


def test_a_batch_that_raises_leaves_the_stored_state_as_it_was(tmp_path: pathlib.Path) -> None:
    env, sm = _fresh(tmp_path, "state", policy())
    sm.apply(MintCredits(to_peer="p0", amount=5, reason="r"), index=1, term=1)
    opened = sm.apply(OpenSession(owner="me"), index=2, term=1)
    assert isinstance(opened, Created)
    before = state_digest(sm)
    with pytest.raises(RuntimeError), sm.batch():
        sm.apply(MintCredits(to_peer="p1", amount=7, reason="r"), index=3, term=1)
        sm.apply(
            Envelope(
                client_id=opened.id,
                seq=1,
                command=MintCredits(to_peer="p2", amount=1, reason="r"),
            ),
            index=4,
            term=2,
        )
        raise RuntimeError("crash in the middle of a batch")
    env.close()
    env = _env(tmp_path)
    reopened = env.load()
    assert env.applied() == (2, 1)
    assert state_digest(reopened) == before
    env.close()


def test_replace_swaps_the_whole_state(tmp_path: pathlib.Path) -> None:
    env, sm = _fresh(tmp_path, "state", policy())
    sm.apply(MintCredits(to_peer="old", amount=5, reason="r"), index=1, term=1)
    sm.apply(OpenSession(owner="a"), index=2, term=1)
    other = ClusterStateMachine(small_policy(window=8))
    other.apply(MintCredits(to_peer="new", amount=9, reason="r"), index=1, term=1)
    for index in range(2, 40):
        other.apply(OpenSession(owner="b"), index=index, term=2)
    stored = env.replace(other)
    assert state_digest(stored) == state_digest(other)
    env.close()
    env = _env(tmp_path)
    assert state_digest(env.load()) == state_digest(other)
    assert env.applied() == (39, 2)
    env.close()


def test_a_stored_state_that_does_not_decode_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    env, sm = _fresh(tmp_path, "state", policy())
    sm.apply(OpenSession(owner="a"), index=1, term=1)
    with env.store.env.begin(write=True) as txn:
        txn.put(b"c1", b"\xff", db=env.store.db("sessions"))
    # the table and the key named (s15-small's checked readers, univrs/storage/sm_rows.py)
    with pytest.raises(StorageError, match=r"sessions row b'c1' is malformed"):
        env.load()
    env.close()


def _eviction_script(sm: ClusterStateMachine) -> None:
    """Owner "b" opens first, "a" second; then "b"'s session is used, so in activity order
    "a" comes first: the two owners hold one session each when the table is full."""
    sm.apply(OpenSession(owner="b"), index=1, term=1)  # c1
    sm.apply(OpenSession(owner="a"), index=2, term=1)  # c2
    sm.apply(
        Envelope(client_id="c1", seq=1, command=MintCredits(to_peer="p", amount=1, reason="r")),
        index=3,
        term=1,
    )


def test_eviction_between_equal_owners_does_not_depend_on_history() -> None:
    """Fails on the code before this test: a full table evicted from "the first owner seen"
    (insertion order of a dict of owners), which a replica restored from a snapshot rebuilt in
    activity order: the two replicas evicted different sessions and diverged."""
    pol = small_policy(max_sessions=2)
    live = ClusterStateMachine(pol)
    _eviction_script(live)
    restored = restore_plain(cbor2.loads(cbor2.dumps(snapshot_plain(live))))
    for sm in (live, restored):
        sm.apply(OpenSession(owner="c"), index=4, term=1)
    assert state_digest(live) == state_digest(restored)
    assert not live.has_session("c2")  # "a"'s session was the least recently active
    assert live.has_session("c1")


def test_cached_responses_stay_in_seq_order() -> None:
    sm = ClusterStateMachine(small_policy(window=8))
    opened = sm.apply(OpenSession(), index=1, term=1)
    client_id = opened.id  # type: ignore[union-attr]
    for index, seq in enumerate((3, 1, 2), start=2):
        command = MintCredits(to_peer="p", amount=1, reason="r")
        sm.apply(Envelope(client_id=client_id, seq=seq, command=command), index=index, term=1)
    session = sm.session(client_id)
    assert session is not None and list(session.responses) == [1, 2, 3]
    assert sm.problems() == []


def test_the_revision_of_batch_entries_is_stored_with_the_applied_index(
    tmp_path: pathlib.Path,
) -> None:
    env, sm = _fresh(tmp_path, "state", policy())
    mints = [MintCredits(to_peer=f"p{k}", amount=1, reason="r") for k in range(5)]
    with sm.batch():
        sm.apply_batch(mints, index=1, term=1)  # revisions 1..5 at index 1
        sm.apply(OpenSession(owner="a"), index=2, term=1)  # revision 6: session c6
    assert (sm.last_applied_index, sm.revision) == (2, 6)
    digest = state_digest(sm)
    env.close()
    env = _env(tmp_path)
    reopened = env.load()
    assert (reopened.last_applied_index, reopened.revision) == (2, 6)
    assert state_digest(reopened) == digest
    opened = reopened.apply(OpenSession(owner="a"), index=3, term=1)
    assert isinstance(opened, Created) and opened.id == "c7"  # ids go on from the revision
    env.close()
