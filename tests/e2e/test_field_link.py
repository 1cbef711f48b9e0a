"""A field link: the station's backlog over a satellite/2G-like uplink (600 ms round trip,
64 kbit/s, connections dropped at random) with a daily budget smaller than the backlog. The most
valuable captures go first, the budget holds, and the report says how long the backlog took.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path

from agent.broker import free_port
from agent.capture import Capture
from agent.inference.package import Detection
from agent.store import Store
from tests.e2e.chain import NAMES, StationProcess, start_clouds, station_toml
from tests.e2e.netlink import CloudLink
from tests.e2e.report import Report
from tests.helpers import jpeg, wait_for
from tests.linkproxy import FieldLink

STATION = "field-station"
KINDS = ["empty", "vehicle", "animal", "empty", "person", "empty"]
RANK = {"person": 0, "animal": 0, "vehicle": 1, "empty": 3}  # agent/store.py VALUE_RANK_SQL
CAPTURES = 36
BATCH = 3  # captures per batch: a few seconds each at 64 kbit/s


def seed_backlog(db: Path) -> tuple[dict[str, str], int]:
    """Days of captures the station could not send: analysed, of mixed value, oldest first."""
    store = Store(db, check_on_start=False)
    kinds: dict[str, str] = {}
    total = 0
    try:
        for i in range(CAPTURES):
            kind = KINDS[i % len(KINDS)]
            image = jpeg(i, (80, 60))
            cap = Capture(
                unit_id="field-unit",
                unit_ref=str(i),
                path="serial",
                jpeg=image,
                received_at=time.time() - 3 * 86400 + i * 600,
                trigger="pir",
            )
            store.add_capture(cap)
            found = [] if kind == "empty" else [Detection(kind, kind, 0.9, None, "md", "5")]
            store.save_analysis(
                cap.id,
                found,
                empty=not found,
                upload_variant="original",
                summary={"models": ["md@5"]},
            )
            kinds[cap.id] = kind
            total += len(image)
    finally:
        store.close()
    return kinds, total


def held_anywhere(db: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT DISTINCT capture_id FROM upload_deliveries WHERE held_variant IS NOT NULL"
        )
        return {r[0] for r in rows}
    finally:
        conn.close()


def test_field_link_sends_the_most_valuable_first_within_the_budget(
    tmp_path, chaos_minutes, seed, report_dir
):
    link = FieldLink(rtt_s=0.6, bits_per_s=64_000, drop_every_s=12.0 * chaos_minutes, seed=seed)
    report = Report("field_link", seed)
    report.observed["link"] = {
        "rtt_s": link.rtt_s,
        "kbit_s": link.bits_per_s / 1000,
        "drop_every_s": link.drop_every_s,
    }
    data = tmp_path / "station"
    data.mkdir()
    kinds, image_bytes = seed_backlog(data / "buffer.db")
    budget = int(image_bytes * 0.55)
    report.observed.update({"backlog_captures": CAPTURES, "backlog_image_bytes": image_bytes})
    report.observed["daily_budget_bytes"] = budget
    clouds = start_clouds(tmp_path / "clouds", {n: CloudLink(n) for n in NAMES}, STATION)
    station: StationProcess | None = None
    t0 = time.monotonic()
    try:
        for i, c in enumerate(clouds.values()):  # each cloud's link drops on its own
            assert c.proxy is not None
            c.proxy.shape(replace(link, seed=seed + i))
        http_port = free_port()
        config = tmp_path / "station.toml"
        config.write_text(
            station_toml(
                STATION,
                data,
                http_port,
                clouds,
                read_timeout_s=30.0,
                upload={
                    "batch_max_items": BATCH,
                    "daily_budget_bytes": budget,
                    "heartbeat_interval_s": 0,
                },
                extra="[inference]\nenabled = false\n[power]\nenabled = false\n",
            )
        )
        station = StationProcess(config, http_port, tmp_path / "station.log")
        t0 = time.monotonic()  # the backlog's clock starts with the daemon
        station.start()

        def done() -> dict | None:
            st = station.status() or {}
            up = st.get("upload") or {}
            return up if up.get("state") == "budget_exhausted" else None

        up = wait_for(done, 240 * max(1.0, chaos_minutes), "the day's budget spent")
        took = time.monotonic() - t0
        report.observed["backlog_took_s"] = round(took, 1)
        report.observed["bytes_today"] = up["bytes_today"]
        assert station.stop() == 0, station.tail()
    finally:
        if station is not None and station.running():
            station.kill()
        drops = sum(c.proxy.drops for c in clouds.values() if c.proxy is not None)
        report.observed["connection_drops"] = drops
        report.inject(time.monotonic() - t0, "connection drops (all links)", n=drops)
        for c in clouds.values():
            c.close()
    sent = held_anywhere(data / "buffer.db")
    left = set(kinds) - sent
    worst_sent = max((RANK[kinds[c]] for c in sent), default=-1)
    best_left = min((RANK[kinds[c]] for c in left), default=99)
    report.observed["sent_by_kind"] = {
        k: sum(1 for c in sent if kinds[c] == k) for k in sorted(set(KINDS))
    }
    report.observed["left_by_kind"] = {
        k: sum(1 for c in left if kinds[c] == k) for k in sorted(set(KINDS))
    }
    report.check("something was sent", bool(sent))
    report.check("the budget left captures for tomorrow", bool(left))
    report.check("the most valuable went first", worst_sent <= best_left)
    # a try cut by a drop counts its bytes, and every try (retries too) is weighed against what
    # is left of the budget before it goes: the budget is never passed
    over = report.observed["bytes_today"] - budget
    report.observed["budget_overshoot_bytes"] = max(0, over)
    report.check("the daily budget held", over <= 0)
    report.write(report_dir)
    failed = [k for k, ok in report.checks.items() if not ok]
    assert not failed, f"{failed}; see {report_dir}/field_link.md"
