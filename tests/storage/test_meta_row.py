"""Session 28: the journal writes the state's ``meta``/``state`` row spliced
(univrs/storage/sm_journal.py ``_meta_bytes``): the policy's row encoded once, the integers as
CBOR's shortest uints. The rule: the very bytes ``cbor2.dumps`` made of the row's list, for
every size of integer, both values of ``tokens_bootstrapped`` and any policy, and a policy
changed between two rows is encoded again."""

from __future__ import annotations

import types
from typing import Any

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from univrs.sm.sessions import SessionPolicy
from univrs.storage.sm_journal import STATE_FORMAT, LmdbJournal, _policy_row

uints = st.one_of(
    st.integers(0, 30), st.integers(0, 2**64 - 1), st.sampled_from([23, 24, 255, 256])
)
policies = st.builds(
    SessionPolicy,
    window=st.integers(1, 2**40),
    max_sessions=st.integers(1, 10**6),
    ttl_entries=st.one_of(st.none(), st.integers(1, 2**63)),
    ttl_ms=st.one_of(st.none(), st.integers(1, 2**63)),
    max_sessions_per_owner=st.integers(1, 5000),
)


def _state(policy: SessionPolicy, values: list[int], bootstrapped: bool) -> Any:
    index, term, clock_ms, revision = values
    return types.SimpleNamespace(
        policy=policy,
        last_applied_index=index,
        last_applied_term=term,
        clock_ms=clock_ms,
        revision=revision,
        tokens_bootstrapped=bootstrapped,
    )


def _reference(sm: Any) -> bytes:
    row = [
        STATE_FORMAT,
        sm.last_applied_index,
        sm.last_applied_term,
        sm.clock_ms,
        sm.tokens_bootstrapped,
        _policy_row(sm.policy),
        sm.revision,
    ]
    return cbor2.dumps(row)


@given(st.lists(st.tuples(policies, st.lists(uints, min_size=4, max_size=4), st.booleans())))
def test_the_meta_row_is_the_bytes_of_its_list(rows: list[Any]) -> None:
    journal = LmdbJournal.__new__(LmdbJournal)  # no store needed: the bytes only
    journal._policy_bytes = None
    fixed = SessionPolicy()
    for policy, values, bootstrapped in rows:
        for p in (policy, policy, fixed):  # a policy seen again, and another one between
            sm = _state(p, values, bootstrapped)
            assert journal._meta_bytes(sm) == _reference(sm)


def test_a_value_out_of_cbors_uints_is_encoded_by_cbor2() -> None:
    journal = LmdbJournal.__new__(LmdbJournal)
    journal._policy_bytes = None
    for values in ([2**64, 1, 1, 1], [1, 1, 1, 2**70]):
        sm = _state(SessionPolicy(), values, False)
        assert journal._meta_bytes(sm) == _reference(sm)
