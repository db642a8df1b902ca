"""scripts/bench_scale's cluster figures (issue 17) on real processes, at a tiny N."""

from __future__ import annotations

import pathlib

import pytest

from univrs.bench.scale_cluster import run_cluster
from univrs.bench.scale_load import longest_gap
from univrs.bench.scale_state import build
from univrs.bench.scale_steps import bucket_quantile
from univrs.runtime.snapshots import capture

FIGURES = (
    "offline_restore_s",
    "cold_start_s",
    "writes_per_s",
    "apply_rate_per_s",
    "page_p50_s",
    "page_p99_s",
    "snapshot_s",
    "snapshot_ack_gap_s",
    "restart_to_read_s",
    "join_s",
    "join_stream_s",
    "join_check_s",
    "peak_rss_bytes_max",
)


def test_a_seeded_cluster_gives_every_figure_and_the_joined_member_the_leaders_state(
    tmp_path: pathlib.Path,
) -> None:
    n = 300
    sm = build(n)
    data = capture(sm)()
    out = run_cluster(
        data,
        index=sm.last_applied_index,
        term=sm.last_applied_term,
        n=n,
        folder=tmp_path / "cluster",
        budget=600,
        load_seconds=2,
    )
    assert "error" not in out, out
    missing = [k for k in FIGURES if not isinstance(out.get(k), int | float) or out[k] <= 0]
    assert not missing, out
    assert out["page_count"] > 0 and out["page_errors"] == 0, out
    assert out["snapshot_bytes"] and out["snapshot_bytes"] > 0, out
    # The fourth member got the state by snapshot and log, with no election on the way, and
    # every member holds the same state at the same index.
    assert out["elections_during_join"] == 0, out
    assert isinstance(out["join_links_lost"], int), out
    assert out["joined_digest_equals_leader"] is True and out["digests_equal"] is True, out
    assert out["digest_applied_index"] > sm.last_applied_index, out
    for node in ("n1", "n2", "n3", "n4"):
        assert out[f"peak_rss_bytes_{node}"] > 0, out


def test_a_load_only_run_with_the_reader_on_its_own_thread_gives_both_kinds_of_page(
    tmp_path: pathlib.Path,
) -> None:
    n = 300
    sm = build(n)
    out = run_cluster(
        capture(sm)(),
        index=sm.last_applied_index,
        term=sm.last_applied_term,
        n=n,
        folder=tmp_path / "cluster",
        budget=300,
        load_seconds=2,
        page_reader="thread",
        load_only=True,
    )
    assert "error" not in out, out
    assert out["page_errors"] == 0 and out["write_errors"] == 0, out
    # Linearizable pages, local pages and local gets in turn on the reader's own loop.
    counts = [out["page_count"], out["page_local_count"], out["get_local_count"]]
    assert min(counts) > 0 and max(counts) - min(counts) <= 1, out
    assert out["get_local_p99_s"] > 0, out
    assert out["page_p99_s"] > 0 and out["page_local_p99_s"] > 0, out
    assert out["leader_read_p99_le_s"] >= out["leader_read_p50_le_s"] > 0, out
    assert "snapshot_s" not in out and "join_s" not in out  # stopped after the load


def test_a_spent_budget_stops_the_run_with_what_it_measured(tmp_path: pathlib.Path) -> None:
    sm = build(100)
    out = run_cluster(
        capture(sm)(),
        index=sm.last_applied_index,
        term=sm.last_applied_term,
        n=100,
        folder=tmp_path / "cluster",
        budget=0.001,
    )
    assert "budget" in out["error"], out
    assert "restart_to_read_s" not in out


def test_the_longest_gap_runs_from_the_last_ack_before_to_the_first_after() -> None:
    acks = [0.0, 0.1, 0.2, 1.0, 1.05, 1.5]
    assert longest_gap(acks, 0.5, 1.6) == pytest.approx(0.8)  # 0.2 to 1.0
    assert longest_gap(acks, 1.01, 1.6) == pytest.approx(0.45)
    assert longest_gap(acks, 0.3, 0.4) == pytest.approx(0.8)  # none inside
    assert longest_gap([0.0], 0.5, 1.0) is None


def test_a_bucket_quantile_is_the_upper_bound_of_the_bucket_holding_it() -> None:
    cumulative = {0.005: 10.0, 0.01: 50.0, 0.05: 98.0, 0.1: 100.0, float("inf"): 100.0}
    assert bucket_quantile(cumulative, 0.5) == 0.01
    assert bucket_quantile(cumulative, 0.99) == 0.1
    assert bucket_quantile(cumulative, 0.1) == 0.005
    assert bucket_quantile({0.01: 0.0, float("inf"): 0.0}, 0.5) is None
