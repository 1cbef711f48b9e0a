"""The full run's privacy part of bench_inference (quick runs skip it) runs, on the real finders."""

from __future__ import annotations

from bench.bench_inference import bench_privacy, capture_jpeg, privacy_finders


def test_the_privacy_bench_times_the_stage_beside_its_bare_calls():
    # it once failed only in full runs, on an attribute renamed in agent/inference/privacy.py
    out = bench_privacy(privacy_finders(1, True), capture_jpeg(), 1)
    assert out["find_ms"] > 0 and out["blur_ms"] >= 0 and out["raw_ms"] > 0
    assert out["total_ms"] == out["find_ms"] + out["blur_ms"]
