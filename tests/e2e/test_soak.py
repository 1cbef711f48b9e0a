"""Soak: the station daemon under steady traffic from serial, MQTT and HTTP units, uploading to a
cloud, with a small buffer quota; its RSS, open files, threads, buffer file and WAL are sampled
and charted, and none may keep growing over the second half, nor the buffer leave its quota.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from agent.broker import PrivateBroker, free_port
from agent.scenes import scene_jpeg
from tests.e2e.chain import Fleet, StationProcess, Tally, start_clouds, station_toml
from tests.e2e.netlink import CloudLink
from tests.e2e.report import Report, chart, slope

STATION = "soak-station"
QUOTA = 1_500_000  # image bytes: reached within seconds, so eviction runs all along
SERIES = [
    ("rss_mb", "RSS (MB)"),
    ("fds", "open fds"),
    ("threads", "threads"),
    ("buffer_mb", "buffer file (MB)"),
    ("wal_mb", "WAL (MB)"),
    ("image_kb", "image bytes (kB)"),
]
# how much a series may still rise over the second half before it counts as growing:
# (absolute, share of its level); the WAL is bounded by SQLite's checkpoint, not by a trend
TOLERANCE = {
    "rss_mb": (8.0, 0.10),
    "fds": (6.0, 0.0),
    "threads": (3.0, 0.0),
    "buffer_mb": (2.0, 0.25),
    "wal_mb": (6.0, 0.0),
    "image_kb": (QUOTA / 1000 * 0.5, 0.0),
}


@pytest.fixture
def soak_settings(request: pytest.FixtureRequest) -> tuple[float, float]:
    minutes = max(0.25, float(request.config.getoption("--soak-minutes")))
    interval = request.config.getoption("--soak-interval")
    if interval is None:
        interval = 60.0 if minutes >= 30 else max(1.0, minutes * 60 / 30)
    return minutes * 60, float(interval)


def sample(proc: psutil.Process, data: Path, image_bytes: float, t: float) -> dict[str, float]:
    def size(p: Path) -> float:
        try:
            return p.stat().st_size / 1e6
        except FileNotFoundError:
            return 0.0

    with proc.oneshot():
        return {
            "t": t,
            "rss_mb": proc.memory_info().rss / 1e6,
            "fds": float(proc.num_fds()),
            "threads": float(proc.num_threads()),
            "buffer_mb": size(data / "buffer.db"),
            "wal_mb": size(data / "buffer.db-wal"),
            "image_kb": image_bytes / 1000,
        }


def test_soak_nothing_grows_without_bound(tmp_path, soak_settings, seed, report_dir):
    soak_s, interval = soak_settings
    report = Report("soak", seed)
    report.observed.update({"soak_s": soak_s, "sample_interval_s": interval})
    clouds = start_clouds(tmp_path / "clouds", {"aws": CloudLink("aws")}, STATION)
    broker = PrivateBroker().start()
    tally = Tally()
    images = [scene_jpeg(s, (320, 240)) for s in range(16)]
    fleet = Fleet(STATION, tally, lambda n: images[n % len(images)], serial_units=1, mqtt_units=1)
    station: StationProcess | None = None
    samples: list[dict[str, float]] = []
    try:
        http_port = free_port()
        data = tmp_path / "station"
        config = tmp_path / "station.toml"
        config.write_text(
            station_toml(
                STATION,
                data,
                http_port,
                clouds,
                serial_ports=fleet.serial_ports,
                broker_port=broker.port,
                extra=f"[storage]\nquota_bytes = {QUOTA}\nevict_interval_s = 1\n"
                "[inference]\nenabled = false\n[power]\nenabled = false\n",
            )
        )
        station = StationProcess(config, http_port, tmp_path / "station.log")
        station.start()
        assert station.process is not None
        proc = psutil.Process(station.process.pid)
        fleet.start(station.base, broker, 0.25, seed)
        t0 = time.monotonic()
        while (t := time.monotonic() - t0) < soak_s:
            st = station.status() or {}
            image_bytes = float(st.get("queue", {}).get("stored_image_bytes", 0))
            samples.append(sample(proc, data, image_bytes, t))
            time.sleep(max(0.0, interval - (time.monotonic() - t0 - t)))
        fleet.stop(30)
        report.observed["captures_acknowledged"] = len(tally.acked)
        report.observed["uploaded"] = (station.status() or {})["queue"]["by_state"]["uploaded"][
            "count"
        ]
        assert station.stop() == 0, station.tail()
    finally:
        fleet.stop(5)
        if station is not None and station.running():
            station.kill()
        broker.stop()
        for c in clouds.values():
            c.close()

    png = chart(samples, SERIES, report_dir / "soak.png")
    report.observed["chart"] = png.name
    half = [s for s in samples if s["t"] >= samples[-1]["t"] / 2]
    span = half[-1]["t"] - half[0]["t"] if len(half) > 1 else 0.0
    xs = [s["t"] for s in half]
    for key, _label in SERIES:
        ys = [s[key] for s in half]
        rate = slope(xs, ys)
        absolute, share = TOLERANCE[key]
        allowed = absolute + share * (sum(ys) / len(ys))
        report.observed[f"{key}_second_half_growth"] = round(rate * span, 3)
        report.observed[f"{key}_max"] = round(max(s[key] for s in samples), 3)
        report.check(f"{key} does not keep growing", rate * span <= allowed)
    # eviction runs each second: the buffer may be over by what arrives in between, not more
    report.check(
        "buffer stays within its quota",
        max(s["image_kb"] for s in half) * 1000 <= QUOTA + 300_000,
    )
    report.check("traffic flowed", len(tally.acked) > 20)
    report.write(report_dir)
    failed = [k for k, ok in report.checks.items() if not ok]
    assert not failed, f"{failed}; see {report_dir}/soak.md"
