"""The state env's upgrade at open (state format 1, 2 or 3 to 4) at scale: time, CPU, peak RSS.

A node opening a data dir written by a build of an older state format upgrades its
``state.lmdb`` in ``StateEnv.load`` (``StateEnv._upgrade``: one write transaction; format 1
builds ``workload_counts`` from every instance row, formats 1 and 2 split the sessions' rows,
formats 1 to 3 put the response rows in their window's slots). This bench measures that open
on a state of the size the issue asks about:

1. the source: a format-4 ``state.lmdb`` (``--env``: e.g. a member's of a kept
   ``scripts/bench_scale --cluster-only --keep DIR`` run at 1,000,000 + 1,000,000), or one
   built here (``--objects N``: ``univrs.bench.scale_state.build`` copied into a new env);
2. optionally, sessions up to the policy's ``max_sessions`` with every slot of their window
   answered (``--full-sessions``: the upgrade's worst case for the session tables), through
   the real apply path, one write transaction per 1,000 commands;
3. a fresh process opens the format-4 env (no upgrade): its open time and state digest;
4. the env is rewritten as a build of format ``--format`` left it (the rows of
   ``tests/runtime/state_envs.old_layout``, which the upgrade's tests use), then a fresh
   process opens it: the upgrade's wall and CPU time, the process's peak RSS (``VmHWM``:
   the env's pages it mapped count), the log line's counts, and the digest after, which must
   equal the one before; opened again, nothing left to upgrade.

Prints one JSON line (also ``--json PATH``). Runs in ``--work`` (a copy of the source: the
source is only read).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.runtime.state_envs (the old layouts)

from univrs.bench import own  # noqa: E402
from univrs.bench.own import peak_rss_bytes, rss_bytes  # noqa: E402
from univrs.bench.report import print_json  # noqa: E402
from univrs.runtime.snapshots import capture_digest  # noqa: E402
from univrs.storage.sm_tables import StateEnv  # noqa: E402


def child(path: str, digest: bool) -> None:
    """Open the env at ``path`` the way a node does (``StateEnv.load``); print JSON."""
    import logging

    records: list[dict[str, Any]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "state env upgraded":
                records.append(
                    {k: getattr(record, k, None) for k in ("from_format", "counts_rows")}
                    | {"response_rows": getattr(record, "response_rows", None)}
                )

    logging.getLogger("univrs").addHandler(Keep())
    logging.getLogger("univrs").setLevel(logging.INFO)
    out: dict[str, Any] = {"rss_before": rss_bytes()}
    wall, cpu = time.perf_counter(), time.process_time()
    env = StateEnv(path)
    sm = env.load()
    out["open_s"] = round(time.perf_counter() - wall, 3)
    out["open_cpu_s"] = round(time.process_time() - cpu, 3)
    out["open_peak_rss"] = peak_rss_bytes()
    out["upgraded"] = records[0] if records else None
    sessions = list(sm.stored_sessions())
    out["sessions"] = len(sessions)
    out["responses"] = sum(len(s.responses) for s in sessions)
    out["index"] = sm.last_applied_index
    if digest:
        cpu = time.process_time()
        out["digest"] = capture_digest(sm)()  # the node's (streamed on LMDB)
        out["digest_cpu_s"] = round(time.process_time() - cpu, 3)
    out["peak_rss"] = peak_rss_bytes()
    env.close()
    print(json.dumps(out))


def run_child(path: pathlib.Path, digest: bool, timeout: float) -> dict[str, Any]:
    how = ["--digest"] if digest else []
    return own.run_child(__file__, ["--child", str(path), *how], timeout, "child")


def build_env(path: pathlib.Path, n: int) -> None:
    """A format-4 env holding ``scale_state.build(n)`` (copied in by ``StateEnv.replace``)."""
    from univrs.bench.scale_state import build

    env = StateEnv(str(path))
    env.replace(build(n))
    env.close()


def fill_sessions(path: pathlib.Path, chunk: int = 1_000) -> int:
    """Open sessions up to the policy's ``max_sessions`` (owners spread so that no owner passes
    ``max_sessions_per_owner``) and answer every seq of their window (keyed scales of existing
    workloads), through ``apply``, about ``chunk`` commands per write transaction. Returns the
    commands applied."""
    from univrs.sm import Created, Envelope, OpenSession, ScaleWorkload

    env = StateEnv(str(path))
    sm = env.load()
    policy = sm.policy
    wanted = policy.max_sessions - len(list(sm.stored_sessions()))
    owners = -(-policy.max_sessions // policy.max_sessions_per_owner) + 1
    ids = [w.id for w in sm.list_workloads(limit=1_000)]
    index, ms, term = sm.last_applied_index, sm.clock_ms, sm.last_applied_term
    applied = 0
    per_batch = max(1, chunk // (policy.window + 1))
    while applied < wanted * (policy.window + 1):
        with env.store.batch():
            for _ in range(min(per_batch, wanted - applied // (policy.window + 1))):
                index += 1
                ms += 1
                owner = f"owner-{index % owners}"
                opened = sm.apply(OpenSession(owner=owner), index=index, term=term, time_ms=ms)
                assert isinstance(opened, Created), opened
                for seq in range(1, policy.window + 1):
                    index += 1
                    cmd = ScaleWorkload(id=ids[(seq + index) % len(ids)], replicas=seq % 5)
                    keyed = Envelope(command=cmd, client_id=opened.id, seq=seq, owner=owner)
                    sm.apply(keyed, index=index, term=term, time_ms=ms)
                applied += policy.window + 1
    assert len(list(sm.stored_sessions())) == policy.max_sessions
    env.close()
    return applied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--env", type=pathlib.Path, help="a format-4 state.lmdb (only read)")
    source.add_argument("--objects", type=int, help="build N workloads + N instances here")
    parser.add_argument("--format", type=int, choices=(1, 2, 3), default=3)
    parser.add_argument("--full-sessions", action="store_true")
    parser.add_argument("--work", type=pathlib.Path, required=False)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--json", type=pathlib.Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--digest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.digest)
        return
    from tests.runtime.state_envs import old_layout

    if args.work is None:
        parser.error("--work is needed")
    work: pathlib.Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env_path = work / "state.lmdb"
    row: dict[str, Any] = {"format": args.format, "loadavg_start": os.getloadavg()}
    started = time.perf_counter()
    if args.env is not None:
        env_path.mkdir()
        shutil.copy(args.env / "data.mdb", env_path / "data.mdb")
        row["source"] = str(args.env)
    else:
        build_env(env_path, args.objects)
        row["source"] = f"built: {args.objects:,} + {args.objects:,}"
    row["prepare_s"] = round(time.perf_counter() - started, 1)
    if args.full_sessions:
        started = time.perf_counter()
        row["session_commands"] = fill_sessions(env_path)
        row["fill_s"] = round(time.perf_counter() - started, 1)
    row["env_bytes"] = os.path.getsize(env_path / "data.mdb")
    before = run_child(env_path, True, args.timeout)
    row["format4_open"] = before
    started = time.perf_counter()
    old_layout(str(env_path), args.format)
    row["downgrade_s"] = round(time.perf_counter() - started, 1)
    after = run_child(env_path, True, args.timeout)
    row["upgrade_open"] = after
    again = run_child(env_path, False, args.timeout)
    row["open_again"] = again
    row["digest_equal"] = after["digest"] == before["digest"]
    row["sessions_equal"] = (after["sessions"], after["responses"]) == (
        before["sessions"],
        before["responses"],
    )
    row["upgraded_once"] = after["upgraded"] is not None and again["upgraded"] is None
    row["loadavg_end"] = os.getloadavg()
    print_json([row], args.json)
    if not (row["digest_equal"] and row["sessions_equal"] and row["upgraded_once"]):
        raise SystemExit("the upgraded state differs from the state before (see the JSON)")


if __name__ == "__main__":
    main()
