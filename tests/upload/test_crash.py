"""A station process killed in the middle of a batch loses nothing and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import wait_for
from tests.upload.upload_helpers import add_captures, assert_consistent

CHILD = Path(__file__).with_name("upload_child.py")


def _start(config: Path, buffer: Path, result: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(config), str(buffer), str(result)], env=env
    )


def _doubts(station) -> int:
    with station.store.read() as conn:
        return conn.execute(
            "SELECT count(*) FROM upload_deliveries WHERE doubt_variant IS NOT NULL"
        ).fetchone()[0]


def test_sigkill_mid_batch_loses_and_duplicates_nothing(new_station, links, tmp_path):
    station = new_station(primary="gcp")
    add_captures(station.store, 40, kinds=["animal", "person", "empty", "received"])
    config = tmp_path / "station.toml"
    config.write_text(station.config_text)
    links["gcp"].proxy.set("delay", delay_s=0.03)  # each batch takes a while on the wire
    first = _start(config, station.store.path, tmp_path / "first.json")
    try:
        wait_for(
            lambda: station.states().get("uploaded", 0) >= 8 and _doubts(station) > 0,
            what="a batch in flight after some were acknowledged",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    acknowledged = {cid for cid, v in station.held()["gcp"].items() if v}
    assert _doubts(station) > 0, "the kill did not land mid-batch"

    links["gcp"].proxy.set("pass")
    second = _start(config, station.store.path, tmp_path / "second.json")
    try:
        wait_for(lambda: station.pending_or_doubt() == 0, what="drained after the restart")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    counts = json.loads((tmp_path / "second.json").read_text())
    # nothing acknowledged before the kill was sent again (a resend would come back "duplicate")
    assert counts.get("duplicate", 0) == 0, counts
    held = assert_consistent(station, links)
    assert acknowledged <= held["gcp"]
