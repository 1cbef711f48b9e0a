"""A capture whose image bytes rotted in place is found before upload, failed and counted."""

from __future__ import annotations

import sqlite3

import requests

from tests.helpers import wait_for
from tests.upload.upload_helpers import add_captures


def rot(db_path: str, capture_id: str) -> None:
    """Flip one byte of the stored original in place, as a failing SD card or disk would."""
    conn = sqlite3.connect(db_path)
    try:
        (blob,) = conn.execute(
            "SELECT jpeg FROM images WHERE capture_id = ? AND variant = 'original'", (capture_id,)
        ).fetchone()
        data = bytearray(blob)
        data[len(data) // 2] ^= 0x5A
        conn.execute(
            "UPDATE images SET jpeg = ? WHERE capture_id = ? AND variant = 'original'",
            (bytes(data), capture_id),
        )
        conn.commit()
    finally:
        conn.close()


def cloud_rejections(cloud, reason: str) -> float:
    text = requests.get(f"{cloud.direct_url}/metrics", timeout=10).text
    key = f'fieldstation_cloud_rejections_total{{reason="{reason}"}} '
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(key)), 0)


def test_rotted_image_is_failed_before_upload_with_its_reason(new_station, links):
    station = new_station(primary="aws")
    ids = add_captures(station.store, 4, kinds=["animal"])
    rot(str(station.store.path), ids[1])
    before = {n: cloud_rejections(c, "digest") for n, c in links.items()}
    station.start()
    wait_for(lambda: station.states().get("uploaded") == 3, 60, "the three sound captures sent")
    wait_for(lambda: station.states().get("failed") == 1, 30, "the rotted one failed")
    station.stop()
    row = station.store.get_capture(ids[1])
    assert row["state"] == "failed" and "sha256" in row["error"]
    rotted = station.metrics.registry.get_sample_value("fieldstation_upload_rotted_images_total")
    assert rotted == 1
    # found on the station: no cloud ever saw the rotted bytes
    assert {n: cloud_rejections(c, "digest") for n, c in links.items()} == before
    assert station.store.read_image(ids[1]) is not None  # kept, never deleted
