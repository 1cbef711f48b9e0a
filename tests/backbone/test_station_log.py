"""The log says what the station does: warnings at start, a periodic summary, no raw LiteRT line."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from agent.capture import Capture
from agent.daemon import ActivitySummary
from agent.store import BUFFER_FILE, Store
from tests.helpers import jpeg

REPO = Path(__file__).resolve().parents[2]


def test_start_warns_when_there_is_no_detector_and_no_endpoint(make_station, caplog):
    caplog.set_level(logging.WARNING, logger="agent.daemon")
    make_station("[inference]\nenabled = true\n[modelsync]\nenabled = false\n")
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("no detector configured") for m in said), said
    assert any(m.startswith("no upload endpoint") for m in said), said


def _capture(i: int, received_at: float) -> Capture:
    return Capture(
        unit_id="cam-1", unit_ref=str(i), path="serial", jpeg=jpeg(i), received_at=received_at
    )


def test_the_periodic_summary_counts_what_happened_since_the_last(tmp_path: Path, caplog):
    now = [1000.0]
    store = Store(tmp_path / BUFFER_FILE, clock=lambda: now[0])
    summary = ActivitySummary(store, 300, clock=lambda: now[0])
    ids = []
    for i in range(3):
        cap = _capture(i, now[0] + 1)
        store.add_capture(cap)
        ids.append(cap.id)
    summary.count_analysed(ids[0], [])
    with store.transaction() as conn:
        store.fail_pending(conn, ids[1], "test")
    caplog.set_level(logging.INFO, logger="agent.daemon")
    now[0] += 100
    summary.maybe_log()  # not yet: every 300 s
    assert not caplog.records
    now[0] += 200
    summary.maybe_log()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == "last 5 min: stored 3, analysed 1, uploaded 0, failed 1; 2 pending"
    caplog.clear()
    now[0] += 300
    summary.maybe_log()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == "last 5 min: stored 0, analysed 0, uploaded 0, failed 0; 2 pending"
    store.close()


def test_loading_a_model_writes_nothing_raw_on_stderr():
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from agent.inference.package import load_package; "
            f"load_package({str(REPO / 'models' / 'fixtures' / 'scene-animal')!r})",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stderr == ""
