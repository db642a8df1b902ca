"""Replicas in different processes (different string hash seeds) end byte-for-byte equal."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from tests.sm.replay import run

ROOT = pathlib.Path(__file__).resolve().parents[2]


def replay_in_subprocess(hash_seed: str, seed: int, n: int) -> str:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    result = subprocess.run(
        [sys.executable, "-m", "tests.sm.replay", str(seed), str(n)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip()


def test_the_same_log_gives_the_same_bytes_whatever_the_hash_seed() -> None:
    outputs = {replay_in_subprocess(hash_seed, seed=7, n=3000) for hash_seed in ("1", "2", "3")}
    assert len(outputs) == 1
    digest, snapshot_hash = outputs.pop().split()
    assert (digest, snapshot_hash) == run(7, 3000)  # and the same as in this process


def test_different_logs_give_different_digests() -> None:
    assert run(7, 500)[0] != run(8, 500)[0]
