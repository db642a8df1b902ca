"""Start counters (univrs/raft/starts.py): how a hello's start is judged against the newest
start recorded for the same data dir, and what the record keeps.

Each case is one way an older copy of a data dir comes back (docs/security.md, "A data dir
copied back from an older copy"); every ``judge`` refusal below is None without the check."""

from __future__ import annotations

from univrs.raft.starts import CHAIN, MAX_RECORDS_PER_ID, Start, StartBook, judge, valid_start

A, B, C, D = "a" * 16, "b" * 16, "c" * 16, "d" * 16


def chain(*boots: str) -> Start:
    start = Start(counter=1, boots=(boots[0],))
    for boot in boots[1:]:
        start = start.following(boot)
    return start


def test_the_original_restarting_is_taken() -> None:
    assert judge(None, chain(A)) is None
    assert judge((1, A), chain(A)) is None  # a redial of the same start
    assert judge((1, A), chain(A, B)) is None
    assert judge((1, A), chain(A, B, C)) is None  # the receiver missed start 2


def test_a_copy_started_after_a_later_start_is_refused() -> None:
    # The copy was taken during start 1 (counter 1 on disk); the original started again (2, B)
    # and a peer recorded it; the copy put back starts as 2 with its own boot id C.
    problem = judge((2, B), chain(A, C))
    assert problem is not None and "copy of its data dir taken before that start" in problem
    # A copy from further back names a lower counter.
    problem = judge((3, C), chain(A, D))
    assert problem is not None and "it is start 2, but start 3" in problem


def test_a_copy_restarted_a_few_times_is_still_refused() -> None:
    # Its chain forked from the original's at start 2: however often it restarts (up to
    # CHAIN - 1 starts past the record), the boot id at counter 2 is not the recorded one.
    copy = chain(A, C)
    for i in range(CHAIN - 1):
        copy = copy.following(f"{i:016x}")
        assert judge((2, B), copy) is not None, copy.counter
    # Past the chain's reach the record cannot be checked (the window docs/security.md names).
    copy = copy.following("e" * 16)
    assert copy.boot_at(2) is None
    assert judge((2, B), copy) is None


def test_a_hello_without_a_start_is_refused_once_the_data_dir_announced_one() -> None:
    # An older build on an older copy (a VM snapshot from before the upgrade) names none.
    assert judge(None, None) is None  # never announced: an older build, not checked
    problem = judge((4, A), None)
    assert problem is not None and "named no start counter" in problem


def test_the_book_keeps_the_newest_start_per_incarnation() -> None:
    book = StartBook()
    assert book.maybe_record("n2", "inc", chain(A))
    assert not book.maybe_record("n2", "inc", chain(A))  # nothing new: no write
    assert book.maybe_record("n2", "inc", chain(A, B))
    assert not book.maybe_record("n2", "inc", chain(A))  # never goes back
    assert book.recorded("n2", "inc") == (2, B)
    assert book.problem("n2", "inc", chain(A, C)) is not None
    assert book.problem("n2", "other", chain(A, C)) is None  # another incarnation: its own
    assert book.problem("n2", None, None) is None  # no incarnation named: nothing to hold
    # Bounded per id: the oldest recorded incarnations are forgotten.
    for i in range(MAX_RECORDS_PER_ID + 2):
        book.maybe_record("n3", f"inc{i}", chain(A))
    kept = [k for k in book.records() if k[0] == "n3"]
    assert kept == [("n3", f"inc{i}") for i in range(2, MAX_RECORDS_PER_ID + 2)]
    assert book.recorded("n2", "inc") == (2, B)  # other ids untouched
    # Never the incarnation the configuration binds: made-up ones cannot push it out.
    for i in range(MAX_RECORDS_PER_ID + 2):
        book.maybe_record("n2", f"made-up{i}", chain(A), keep="inc")
    assert book.recorded("n2", "inc") == (2, B)
    assert len([k for k in book.records() if k[0] == "n2"]) == MAX_RECORDS_PER_ID


def test_valid_starts() -> None:
    assert valid_start(chain(A, B))
    assert not valid_start(Start(counter=0, boots=(A,)))
    assert not valid_start(Start(counter=1, boots=(A, B)))  # more boots than starts
    assert not valid_start(Start(counter=1, boots=("xyz",)))
    assert not valid_start(Start(counter=40, boots=(A,) * (CHAIN + 1)))
