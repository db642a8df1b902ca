"""Real processes: the directory lock across processes, and atomicity under kill -9."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from univrs.errors import StorageError
from univrs.storage import LogStore

pytestmark = pytest.mark.process

DEADLINE = 60.0


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen[str]) -> str:
    """The child's next stdout line (children always print or die; the test has a timeout)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=DEADLINE)
        assert proc.stderr is not None
        pytest.fail(f"child exited {proc.returncode}: {proc.stderr.read()}")
    return line.strip()


TRY_OPEN = """
import sys
from univrs.errors import StorageError
from univrs.storage import LogStore
try:
    LogStore.open(sys.argv[1], node_id="n1").close()
except StorageError as exc:
    print("refused:", exc)
else:
    print("opened")
"""

HOLD = """
import sys
from univrs.storage import LogStore
store = LogStore.open(sys.argv[1], node_id="n1")
print("holding", flush=True)
sys.stdin.readline()
"""


def test_a_second_process_is_refused_naming_the_holder(data_dir: pathlib.Path) -> None:
    with LogStore.open(data_dir, node_id="n1"):
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(TRY_OPEN), str(data_dir)],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=True,
        ).stdout
        assert f"locked by another univrs process (pid {os.getpid()})" in out
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRY_OPEN), str(data_dir)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    ).stdout
    assert out.strip() == "opened"


def test_the_lock_dies_with_a_killed_holder(data_dir: pathlib.Path) -> None:
    holder = spawn(HOLD, str(data_dir))
    try:
        assert read_line(holder) == "holding"
        with pytest.raises(StorageError, match=rf"\(pid {holder.pid}\)"):
            LogStore.open(data_dir, node_id="n1")
    finally:
        holder.kill()
        holder.wait(timeout=DEADLINE)
    LogStore.open(data_dir, node_id="n1").close()  # no stale lock after kill -9


WRITER = """
import sys
from univrs.raft.messages import Entry, HardState
from univrs.storage import LogStore
BATCH, REWRITE = int(sys.argv[2]), int(sys.argv[3])
store = LogStore.open(sys.argv[1], node_id="n1")
last = store.last_index()
term = store.term(last)
for _ in range(1_000_000):
    # Each call truncates the last REWRITE entries, rewrites them and appends BATCH more, all
    # in a new term, with the hard state: a kill can land mid-delete, mid-put or mid-commit.
    term += 1
    truncate = last - REWRITE + 1 if last >= REWRITE else None
    first = truncate if truncate is not None else last + 1
    last += BATCH
    entries = [Entry(term=term, index=i, data=b"%d;" % i * 100) for i in range(first, last + 1)]
    store.append(
        hard_state=HardState(term=term, commit=last), truncate_from=truncate, entries=entries
    )
    print(last, flush=True)
"""


def test_a_killed_writer_never_leaves_half_a_batch(data_dir: pathlib.Path) -> None:
    batch, rewrite = 64, 8
    rng = random.Random(7)
    for round_ in range(8):  # kill at different moments; each reopen sees whole calls only
        writer = spawn(WRITER, str(data_dir), str(batch), str(rewrite))
        try:
            deadline = time.monotonic() + DEADLINE
            acknowledged = int(read_line(writer))
            started, first_ack = time.perf_counter(), acknowledged
            target = acknowledged + (10 + round_) * batch
            while acknowledged < target:
                assert time.monotonic() < deadline, "writer made no progress"
                acknowledged = int(read_line(writer))
            # Kill at a random point of a later call: right after an acknowledgement the writer
            # is always building its next batch, which would only ever test that moment.
            per_call = (time.perf_counter() - started) / ((acknowledged - first_ack) // batch)
            spin_until = time.perf_counter() + rng.uniform(0, 2 * per_call)
            while time.perf_counter() < spin_until:
                pass
            writer.send_signal(signal.SIGKILL)
        finally:
            writer.kill()
            writer.wait(timeout=DEADLINE)
        with LogStore.open(data_dir, node_id="n1") as store:
            state = store.initial_state()
            last = store.last_index()
            hs = state.hard_state
            assert last % batch == 0  # no half batch
            assert last >= acknowledged  # everything acknowledged is durable
            assert hs.commit == last  # the hard state came in the same transaction
            assert [e.index for e in state.entries] == list(range(1, last + 1))
            assert all(e.data == b"%d;" % e.index * 100 for e in state.entries)
            # The last call's rewrite and batch carry its term; the entry before, the previous.
            tail = state.entries[last - batch - rewrite :]
            assert {e.term for e in tail} == {hs.term}
            assert state.entries[last - batch - rewrite - 1].term == hs.term - 1
