"""Station and cloud share one upload wire schema (agent/upload/manifest.py)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import typing

import cloud.ingest
import cloud.schema
from agent.upload import batch, manifest
from cloud.multipart import parse_parts


def test_the_cloud_validates_exactly_the_fields_the_station_sends():
    station = set(typing.get_type_hints(manifest.ManifestItem))
    cloud_fields = set(cloud.schema.CaptureItem.model_fields)
    assert station == cloud_fields


def test_variant_names_and_ranks_are_one_definition():
    assert cloud.ingest.VARIANT_RANK is manifest.VARIANT_RANK
    assert set(typing.get_args(manifest.Variant)) == set(manifest.VARIANT_RANK)
    assert cloud.schema.Variant is manifest.Variant


def test_an_item_the_station_builds_passes_the_cloud_schema():
    image = b"\xff\xd8\xff\xd9"
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    row = conn.execute(
        """SELECT 'cam-1-7-abc' AS id, 'cam-1' AS unit_id, 'serial' AS path,
                  ? AS sha256, 4 AS size, 1780000000.0 AS received_at, NULL AS captured_at,
                  1000 AS unit_time, 'boot_ms' AS unit_time_kind, 'pir' AS trigger,
                  '{"n": 7}' AS meta, 0 AS empty, 'original' AS upload_variant, 1 AS phase""",
        (hashlib.sha256(image).hexdigest(),),
    ).fetchone()
    item = batch.build_item(
        row,
        [],
        lambda _cid, _variant: image,
        empty_policy="full",
        thumbnails_first=False,
        thumbnail_px=64,
    )
    body, ctype = batch.encode("st-1", [item])
    parts = parse_parts(ctype, body, 1 << 20, 10)
    doc = json.loads(bytes(parts[manifest.MANIFEST_PART].data))
    assert doc["station_id"] == "st-1"
    parsed = cloud.schema.CaptureItem.model_validate(doc["items"][0])
    assert parsed.variant == "full" and parsed.meta == {"n": 7} and parsed.image_part
    assert bytes(parts[parsed.image_part].data) == image
