"""Station and cloud share one upload wire schema (agent/upload/manifest.py)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import typing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

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


# Field values a station might send, good and bad: JSON types the two paths could read apart.
_ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "1", "1.5", "1e3", "true", "full", "none", "pir", "serial", "boot_ms"]),
    st.text(max_size=8),
    st.lists(st.integers(0, 1), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_GOOD = {
    "capture_id": "cam-1-7",
    "unit_id": "cam-1",
    "path": "serial",
    "sha256": "a" * 64,
    "size": 4,
    "received_at": 1780000000.5,
    "variant": "full",
    "image_part": "img0",
    "detections": [{"label": "fox", "group": "animal", "score": 0.5, "box": [0, 0, 1, 1]}],
    "meta": {"n": 7},
}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.dictionaries(
        st.sampled_from([*_GOOD, "captured_at", "unit_time", "empty", "trigger", "extra"]),
        _ODD,
        max_size=3,
    ),
    dropped=st.sets(st.sampled_from(list(_GOOD)), max_size=2),
)
def test_a_manifest_validated_whole_reads_each_item_as_alone(changes, dropped):
    # ingest validates the manifest's JSON in one call and, when that fails, each item on its
    # own: an item must pass or fail, and read, the same either way
    raw = {k: v for k, v in {**_GOOD, **changes}.items() if k not in dropped}
    text = json.dumps({"station_id": "st-1", "items": [raw]}).encode()
    try:
        alone = cloud.schema.CaptureItem.model_validate(json.loads(text)["items"][0])
    except ValidationError:
        alone = None
    try:
        whole = cloud.schema.ValidManifest.model_validate_json(text).items[0]
    except ValidationError:
        whole = None
    assert whole == alone
