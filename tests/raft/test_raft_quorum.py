"""Unit tests of majority arithmetic (univrs/raft/quorum.py)."""

from __future__ import annotations

from univrs.raft.quorum import VoteResult, has_quorum, majority, quorum_index, vote_result


def test_majority() -> None:
    assert [majority(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


def test_quorum_index_picks_the_majority_th_largest() -> None:
    match = {"a": 5, "b": 3, "c": 9}
    assert quorum_index(match.keys(), match.__getitem__) == 5
    match5 = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    assert quorum_index(match5.keys(), match5.__getitem__) == 3
    assert quorum_index({"a"}, lambda _: 7) == 7
    assert quorum_index((), lambda _: 7) == 0
    # Four voters need three: the 3rd largest.
    match4 = {"a": 10, "b": 10, "c": 2, "d": 1}
    assert quorum_index(match4.keys(), match4.__getitem__) == 2


def test_has_quorum() -> None:
    voters = {"a", "b", "c"}
    assert has_quorum(voters, lambda v: v in {"a", "b"})
    assert not has_quorum(voters, lambda v: v == "a")
    assert not has_quorum(set(), lambda v: True)


def test_vote_result_counts_only_voters() -> None:
    voters = {"a", "b", "c"}
    assert vote_result(voters, {"a": True}) is VoteResult.PENDING
    assert vote_result(voters, {"a": True, "b": True}) is VoteResult.WON
    assert vote_result(voters, {"a": True, "b": False, "c": False}) is VoteResult.LOST
    assert vote_result(voters, {"a": True, "b": False}) is VoteResult.PENDING
    # A learner's grant never counts.
    assert vote_result(voters, {"a": True, "x": True, "y": True}) is VoteResult.PENDING
    assert vote_result({"a", "b", "c", "d"}, {"a": True, "b": True}) is VoteResult.PENDING
    assert vote_result({"a", "b", "c", "d"}, {"c": False, "d": False}) is VoteResult.LOST
