"""Camtrap DP 1.0 (validated with frictionless against the official schemas) and MegaDetector."""

from __future__ import annotations

import copy
import csv
import json
import shutil

import jsonschema
import pytest

from cloud.export.camtrap import SCHEMA_DIR
from cloud.process import run_cli
from tests.cloud.cloud_helpers import item, statuses, upload
from tests.helpers import jpeg

BOXLESS = {
    "label": "Vulpes vulpes",
    "group": "animal",
    "score": 0.8,
    "box": None,
    "model": "cls",
    "model_version": "3",
}
PERSON = {
    "label": "person",
    "group": "person",
    "score": 0.95,
    "box": [0.5, 0.5, 0.6, 0.6],
    "model": "det",
    "model_version": "1",
}


@pytest.fixture
def stored(make_live, station_token):
    """A service holding a realistic mix of captures from two units of one located station."""
    server = make_live()
    token = station_token(server, "st-1", location=(52.1, 5.2))
    original = jpeg(2, (320, 240))
    entries = [
        item(
            "c-fox",
            jpeg(1),
            captured_at=1_700_000_000.0,
            detections=[*item("x", b"")[0]["detections"], BOXLESS],
        ),
        item(
            "c-thumb",
            original,
            variant="thumbnail",
            sent=jpeg(3, (32, 24)),
            captured_at=1_700_000_100.0,
        ),
        item(
            "c-person", jpeg(4), unit_id="unit-b", captured_at=1_700_000_200.0, detections=[PERSON]
        ),
        item(
            "c-empty",
            jpeg(5),
            variant="none",
            empty=True,
            detections=[],
            captured_at=None,
            trigger="timer",
        ),
        item("c-unknown", jpeg(6), empty=None, detections=[], captured_at=1_700_000_300.0),
    ]
    assert statuses(upload(server.url, token, "st-1", entries)) == ["stored"] * 5
    return server


def local_copy(out, tmp_path):
    """The package with the official schema URLs pointed at the vendored copies (no network)."""
    checked = tmp_path / "checked"
    shutil.copytree(out, checked)
    descriptor = json.loads((checked / "datapackage.json").read_text())
    for resource in descriptor["resources"]:
        name = f"{resource['name']}-table-schema.json"
        shutil.copy(SCHEMA_DIR / name, checked / name)
        resource["schema"] = name
    del descriptor["profile"]
    (checked / "datapackage.json").write_text(json.dumps(descriptor))
    return checked


def test_camtrap_dp_export_validates_with_frictionless(stored, tmp_path):
    import frictionless

    out = tmp_path / "camtrap"
    printed = run_cli("export", "camtrap-dp", str(out), data_dir=stored.config.server.data_dir)
    assert (
        printed.strip() == f"wrote {out}/datapackage.json: 2 deployments, 4 media, 6 observations"
    )
    report = frictionless.validate(local_copy(out, tmp_path) / "datapackage.json")
    assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])


def test_camtrap_dp_descriptor_follows_the_profile(stored, tmp_path):
    out = tmp_path / "camtrap"
    run_cli("export", "camtrap-dp", str(out), data_dir=stored.config.server.data_dir)
    descriptor = json.loads((out / "datapackage.json").read_text())
    # The 1.0 profile writes "#$defs/version"; a JSON pointer needs "#/$defs/version".
    text = (SCHEMA_DIR / "camtrap-dp-profile.json").read_text().replace('"#$defs/', '"#/$defs/')
    profile = json.loads(text)
    # The Camtrap-specific half of the profile; its other half references the remote
    # Data Package and GeoJSON schemas, which the tests may not fetch.
    camtrap_part = copy.deepcopy(profile["allOf"][1])
    camtrap_part["properties"]["spatial"].pop("$ref")
    camtrap_part["$defs"] = profile.get("$defs", {})
    jsonschema.validate(descriptor, camtrap_part)
    assert (
        descriptor["profile"]
        == "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0/camtrap-dp-profile.json"
    )
    assert descriptor["taxonomic"] == [{"scientificName": "Vulpes vulpes"}]
    assert descriptor["temporal"]["start"] <= descriptor["temporal"]["end"]


def test_camtrap_dp_observations_carry_machine_classifications_and_boxes(stored, tmp_path):
    out = tmp_path / "camtrap"
    run_cli("export", "camtrap-dp", str(out), data_dir=stored.config.server.data_dir)
    rows = {r["observationID"]: r for r in csv.DictReader((out / "observations.csv").open())}
    fox = rows["st-1:c-fox:0"]
    assert fox["observationType"] == "animal" and fox["scientificName"] == "Vulpes vulpes"
    assert fox["classificationMethod"] == "machine" and fox["classifiedBy"] == "wildcam-det 1.2.0"
    assert float(fox["classificationProbability"]) == pytest.approx(0.91)
    assert [float(fox[k]) for k in ("bboxX", "bboxY", "bboxWidth", "bboxHeight")] == [
        0.1,
        0.2,
        0.3,
        0.4,
    ]
    assert rows["st-1:c-person:0"]["observationType"] == "human"
    # The box [0.5, 0.5, 0.6, 0.6] runs off the image: clipped to stay inside.
    assert float(rows["st-1:c-person:0"]["bboxWidth"]) == pytest.approx(0.5)
    assert rows["st-1:c-empty:0"]["observationType"] == "blank"
    assert (
        rows["st-1:c-empty:0"]["observationLevel"] == "event"
        and rows["st-1:c-empty:0"]["mediaID"] == ""
    )
    assert rows["st-1:c-unknown:0"]["observationType"] == "unclassified"


def test_camtrap_dp_export_refuses_stations_without_location(make_live, station_token, tmp_path):
    server = make_live()
    token = station_token(server, "st-nowhere")
    statuses(upload(server.url, token, "st-nowhere", [item("c1", jpeg(1))]))
    with pytest.raises(RuntimeError, match="stations locate st-nowhere LAT LON"):
        run_cli(
            "export", "camtrap-dp", str(tmp_path / "out"), data_dir=server.config.server.data_dir
        )


def test_camtrap_dp_since_filters_and_images_are_copied(stored, tmp_path):
    out = tmp_path / "camtrap"
    run_cli(
        "export",
        "camtrap-dp",
        str(out),
        "--since",
        "2023-11-14T22:15:00Z",
        "--images",
        data_dir=stored.config.server.data_dir,
    )
    media = list(csv.DictReader((out / "media.csv").open()))
    # 1_700_000_100 is 22:15:00Z; c-empty has no captured_at and is timed by its (recent) receipt.
    assert [m["mediaID"] for m in media] == ["st-1:c-thumb", "st-1:c-person", "st-1:c-unknown"]
    assert (out / media[1]["filePath"]).read_bytes() == jpeg(4)


def test_megadetector_export(stored, tmp_path):
    out = tmp_path / "md" / "results.json"
    printed = run_cli(
        "export", "megadetector", str(out), "--images", data_dir=stored.config.server.data_dir
    )
    assert printed.strip() == f"wrote {out}: 5 images, 3 detections"
    document = json.loads(out.read_text())
    assert document["info"]["format_version"] == "1.4"
    assert document["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    images = {i["file"]: i for i in document["images"]}
    fox = images["st-1/c-fox.jpg"]["detections"][0]
    assert fox["category"] == "1" and fox["conf"] == 0.91 and fox["bbox"] == [0.1, 0.2, 0.3, 0.4]
    fox_class = document["classification_categories"]
    assert [fox_class[c] for c, _ in fox["classifications"]] == ["Vulpes vulpes", "Vulpes vulpes"]
    assert images["st-1/c-person.jpg"]["detections"][0]["category"] == "2"
    assert images["st-1/c-empty.jpg"]["failure"].startswith("no image")
    assert images["st-1/c-unknown.jpg"]["detections"] == []
    assert (out.parent / "st-1" / "c-fox.jpg").read_bytes() == jpeg(1)
