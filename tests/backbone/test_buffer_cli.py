"""`fieldstation buffer tables|export`: the operator reads the buffer and changes nothing."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

from agent.capture import Capture
from agent.store import BUFFER_FILE, Store
from tests.helpers import jpeg


def fieldstation(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60
    )


def make_buffer(folder: Path, n: int = 3) -> list[str]:
    store = Store(folder / BUFFER_FILE)
    ids = []
    for i in range(n):
        capture = Capture(
            unit_id="cam-1",
            unit_ref=str(i),
            path="serial",
            jpeg=jpeg(i),
            received_at=1_780_000_000.0 + i,
            unit_time=1000 + i,
            unit_time_kind="boot_ms",
            trigger="pir",
        )
        store.add_capture(capture)
        ids.append(capture.id)
    store.close()
    return ids


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tables_lists_every_table_with_its_row_count(tmp_path):
    make_buffer(tmp_path)
    r = fieldstation("buffer", "tables", "--data-dir", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    tables = {t["name"]: t for t in json.loads(r.stdout)}
    assert tables["captures"]["rows"] == 3 and tables["images"]["rows"] == 3
    assert tables["images"]["columns"]["jpeg"].upper() == "BLOB"
    text = fieldstation("buffer", "tables", "--data-dir", str(tmp_path)).stdout
    assert "captures" in text and "(read-only)" in text


def test_export_writes_rows_as_csv_and_json_lines(tmp_path):
    ids = make_buffer(tmp_path)
    r = fieldstation("buffer", "export", "captures", "--format", "csv", "--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["id"] for row in rows] == ids and rows[0]["unit_id"] == "cam-1"
    r = fieldstation("buffer", "export", "captures", "--limit", "2", "--data-dir", str(tmp_path))
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == ids[:2]


def test_export_leaves_images_out_unless_asked_and_then_round_trips_them(tmp_path):
    make_buffer(tmp_path, n=1)
    plain = fieldstation("buffer", "export", "images", "--data-dir", str(tmp_path)).stdout
    assert "jpeg" not in json.loads(plain.splitlines()[0])
    r = fieldstation("buffer", "export", "images", "--blobs", "--data-dir", str(tmp_path))
    blob = json.loads(r.stdout.splitlines()[0])["jpeg"]

    assert blob["$base64"] is True and base64.b64decode(blob["encoded"]) == jpeg(0)


def test_reading_changes_nothing_in_the_buffer(tmp_path):
    make_buffer(tmp_path)
    before = digest(tmp_path / BUFFER_FILE)
    for args in (["tables"], ["export", "captures", "--format", "json"], ["export", "units"]):
        assert fieldstation("buffer", *args, "--data-dir", str(tmp_path)).returncode == 0
    assert digest(tmp_path / BUFFER_FILE) == before
    # a reader of a WAL database may leave the shared-memory index, never a log of writes
    wal = tmp_path / (BUFFER_FILE + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_unknown_table_and_missing_buffer_are_clear_errors(tmp_path):
    make_buffer(tmp_path)
    r = fieldstation("buffer", "export", "nope", "--data-dir", str(tmp_path))
    assert r.returncode != 0 and "no table 'nope'" in r.stderr and "captures" in r.stderr
    r = fieldstation("buffer", "tables", "--data-dir", str(tmp_path / "empty"))
    assert r.returncode != 0 and "no buffer at" in r.stderr
