"""`fieldstation models list` and `fieldstation infer`, as a field technician runs them."""

from __future__ import annotations

import argparse
import json

import pytest

from agent.config import ConfigError, parse_config
from agent.inference import cli

from .conftest import FIXTURES, MODELS, copy_package


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fieldstation")
    cli.add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_infer_prints_the_face_in_a_photo(photos, capsys, blazeface_installed, tmp_path):
    status = run(
        ["infer", str(photos["astronaut"]), str(photos["coffee"]),
         "--model", str(MODELS / "blazeface-short-range"), "--data-dir", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"{photos['astronaut']}: 512x512, 2 detection(s)")
    assert lines[0].endswith("upload blurred")
    assert lines[1].split()[:2] == ["face", "person"]
    assert "[blazeface-short-range@0.6.0]" in lines[1]
    # the privacy stage's default body finder runs too, as it would on the station
    assert lines[2].split()[:2] == ["person", "person"]
    assert "[opencv-hog-people@" in lines[2]
    assert lines[3].startswith(f"{photos['coffee']}: 600x400, 0 detection(s)")
    assert lines[3].endswith("(empty)")


def test_infer_json_has_one_document_per_image(photos, capsys, blazeface_installed, tmp_path):
    run(["infer", str(photos["camera"]), "--model", str(MODELS / "blazeface-full-range"),
         "--json", "--data-dir", str(tmp_path)])  # fmt: skip
    (line,) = capsys.readouterr().out.splitlines()
    doc = json.loads(line)
    assert doc["size"] == [512, 512] and doc["empty"] is False
    assert [d["label"] for d in doc["detections"]] == ["face"]
    assert doc["detections"][0]["model"] == "blazeface-full-range@0.6.0"
    assert set(doc["timings_ms"]) == {"decode", "preprocess", "invoke", "postprocess", "privacy"}


def test_infer_reports_a_bad_image_and_a_bad_package(tmp_path, capsys):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a jpeg")
    assert run(["infer", str(junk), "--model", str(FIXTURES / "blob-ssd"),
                "--data-dir", str(tmp_path)]) == 1  # fmt: skip
    assert "junk.jpg: error: not a JPEG" in capsys.readouterr().out
    pkg = copy_package("blob-ssd", tmp_path)
    (pkg / "model.tflite").write_bytes(b"broken")
    assert run(["infer", str(junk), "--model", str(pkg), "--data-dir", str(tmp_path)]) == 2
    assert "model package blob-ssd@1.0.0" in capsys.readouterr().err


def test_models_list_shows_versions_active_and_broken_packages(tmp_path, capsys):
    data = tmp_path / "data"
    installed = data / "models"
    installed.mkdir(parents=True)
    copy_package("blob-yolo-nc", installed)
    broken = copy_package("colour-int8", installed)
    (broken / "model.tflite").write_bytes(b"\x00" * 64)
    toml = tmp_path / "station.toml"
    toml.write_text(f'[station]\ndata_dir = "{data}"\n[inference]\ndetector = "blob-yolo-nc"\n')
    status = run(["models", "list", "--config", str(toml), "--json"])
    doc = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in doc["packages"] if r["path"].startswith(str(installed))}
    assert status == 0
    assert doc["runtime"].startswith("ai-edge-litert")
    assert rows["blob-yolo-nc"]["active"] == "detector"
    assert rows["blob-yolo-nc"]["version"] == "1.0.0" and rows["blob-yolo-nc"]["status"] == "ok"
    assert rows["colour-int8"]["status"].startswith("error: model sha256")
    assert run(["models", "list", "--config", str(toml)]) == 1  # a broken package: exit 1
    table = capsys.readouterr().out
    assert "blob-yolo-nc" in table and "detector" in table


def test_inference_section_is_validated_with_its_line():
    with pytest.raises(ConfigError) as info:
        parse_config('[inference]\nthreads = 2\nperson_policy = "publish"\n', "station.toml")
    assert (
        "station.toml:3: inference.person_policy: 'publish' is not one of blur, drop, keep"
        in str(info.value)
    )


def test_inference_defaults_blur_people_and_use_xnnpack():
    section = parse_config("").inference
    assert (section.person_policy, section.xnnpack, section.enabled) == ("blur", True, True)
