"""CPU per write of the per-entry path, one command per entry against batch entries.

``scripts/bench_entries [--writes N] [--batch B] [--repeat R]``: the work every node does per
log entry, in one process, measured with ``time.process_time`` (CPU, so a busy machine moves
it far less than wall time): encode then decode the AppendEntries that carry the entries
(64 commands per message, in 64 entries or in batch entries), append them to an LMDB log
store in a temporary directory (one synced transaction per message), decode the payloads
and apply them to a state machine (the apply loop's decode and ``apply`` /
``apply_batch``). The leader's packing (``Packing.pack``) is counted on the batch side.
Prints microseconds of CPU per write for each step, medians of ``--repeat`` runs. Not the
whole write (no client, no network, no fsync worker): the part that batch entries change.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

from univrs.codec.messages import decode_message, encode_message
from univrs.raft.messages import AppendEntries, Entry
from univrs.runtime.events import Propose
from univrs.runtime.packing import Packing
from univrs.runtime.payload import decode_entry, encode_payload_doc
from univrs.runtime.waiter import Waiter
from univrs.sm import ClusterStateMachine, Envelope, MintCredits, OpenSession
from univrs.storage.log_store import LogStore

PER_MESSAGE = 64  # entries per AppendEntries on the single-command side


def _proposals(n: int) -> list[Propose]:
    out = [_proposal(Envelope(command=OpenSession()))]
    for i in range(1, n):
        envelope = Envelope(
            command=MintCredits(to_peer=f"p{i % 97}", amount=1, reason="bench"),
            client_id="c1",
            seq=i,
        )
        out.append(_proposal(envelope))
    return out


def _proposal(envelope: Envelope) -> Propose:
    payload, doc = encode_payload_doc(envelope, 1_700_000_000_000)
    return Propose(payload, Waiter(), 0.0, doc)


def _run(proposals: list[Propose], packing: Packing) -> dict[str, float]:
    """CPU seconds of each step for these proposals."""
    times: dict[str, float] = {}

    def step(name: str, fn: Callable[[], object]) -> object:
        t0 = time.process_time()
        out = fn()
        times[name] = time.process_time() - t0
        return out

    packed = step("pack", lambda: packing.pack(proposals))
    assert isinstance(packed, list)
    entries = [Entry(term=1, index=i + 1, data=p.payload) for i, p in enumerate(packed)]
    # The same commands per message (and per synced append) on both sides.
    per = max(1, PER_MESSAGE // packing.max_commands) if packing.enabled else PER_MESSAGE
    messages = [
        AppendEntries(
            term=1,
            src="a",
            dst="b",
            prev_log_index=entries[k].index - 1,
            prev_log_term=1 if k else 0,
            entries=tuple(entries[k : k + per]),
            commit=0,
        )
        for k in range(0, len(entries), per)
    ]
    frames = step("encode", lambda: [encode_message(m) for m in messages])
    assert isinstance(frames, list)
    decoded = step("decode", lambda: [decode_message(f, max_size=1 << 26) for f in frames])
    assert isinstance(decoded, list)
    with tempfile.TemporaryDirectory(prefix="univrs-bench-entries-") as tmp:
        store = LogStore.open(tmp, node_id="b", cluster_id="bench")
        try:

            def persist() -> None:
                for m in decoded:
                    store.append(hard_state=None, truncate_from=None, entries=m.entries)

            step("persist", persist)
        finally:
            store.close()
    sm = ClusterStateMachine()

    def apply() -> None:
        for m in decoded:
            for e in m.entries:
                d = decode_entry(e.data)
                assert not isinstance(d, str)
                commands, time_ms, batched = d
                if batched:
                    sm.apply_batch(commands, index=e.index, term=1, time_ms=time_ms)  # type: ignore[arg-type]
                else:
                    sm.apply(commands[0], index=e.index, term=1, time_ms=time_ms)  # type: ignore[arg-type]

    step("apply", apply)
    assert sm.revision == len(proposals), (sm.revision, len(proposals))
    return times


def main(argv: list[str] | None = None) -> None:
    """Print CPU microseconds per write, per step, single-command entries against batches."""
    p = argparse.ArgumentParser(prog="scripts/bench_entries", description=__doc__.split("\n")[0])
    p.add_argument("--writes", type=int, default=4096)
    p.add_argument("--batch", type=int, default=64, help="commands per batch entry (64)")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    proposals = _proposals(args.writes)
    sides = {
        "one entry per write": Packing(enabled=False),
        f"batch entries of {args.batch}": Packing(enabled=True, max_commands=args.batch),
    }
    results: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):  # interleaved
        for name, packing in sides.items():
            for k, v in _run(proposals, packing).items():
                results.setdefault(name, {}).setdefault(k, [])  # type: ignore[arg-type]
                results[name][k].append(v)  # type: ignore[attr-defined]
    steps = ["pack", "encode", "decode", "persist", "apply"]
    print(f"CPU us per write, median of {args.repeat}, {args.writes} writes")
    print(f"{'':24}" + "".join(f"{s:>9}" for s in steps) + f"{'total':>9}")
    for name, by_step in results.items():
        meds = [statistics.median(by_step[s]) * 1e6 / args.writes for s in steps]  # type: ignore[arg-type]
        print(f"{name:24}" + "".join(f"{m:9.1f}" for m in meds) + f"{sum(meds):9.1f}")


if __name__ == "__main__":
    main()
