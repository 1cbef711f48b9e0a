"""The privacy finders' model packages and decoders: cards, installed files, outside bytes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agent.inference import decoders as dec
from agent.inference.image import ImageError
from agent.inference.package import PackageError, load_package
from agent.inference.privacy import Finder, HogPeople, PersonFinders

from .conftest import MODELS, REPO, jpeg_bytes

CARDS = ("blazepose-detector", "selfie-segmentation")


@pytest.fixture(scope="module")
def mediapipe_files() -> None:
    from importlib import metadata

    try:
        metadata.distribution("mediapipe")
    except metadata.PackageNotFoundError:
        pytest.fail("mediapipe is missing: pip install --no-deps 'mediapipe==0.10.14'")


@pytest.mark.parametrize("name", CARDS)
def test_each_card_loads_the_installed_file_and_passes_its_self_test(mediapipe_files, name):
    package = load_package(MODELS / name)
    assert package.card.id == f"{name}@0.10.14"
    assert package.card.model["resource"]["distribution"] == "mediapipe"


def test_a_different_file_behind_the_card_is_refused_by_its_sha256(mediapipe_files, tmp_path):
    pkg = tmp_path / "blazepose-detector"
    shutil.copytree(MODELS / "blazepose-detector", pkg)
    card = json.loads((pkg / "model.json").read_text())
    card["model"]["resource"]["path"] = (
        "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"
    )
    (pkg / "model.json").write_text(json.dumps(card))
    with pytest.raises(PackageError, match="blazepose-detector.*sha256"):
        load_package(pkg)


def test_the_card_generator_reproduces_the_committed_cards(mediapipe_files):
    result = subprocess.run(
        [sys.executable, str(MODELS / "make_person_cards.py"), "--check"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_blazepose_grows_the_face_it_finds_into_the_whole_body(mediapipe_files):
    from skimage import data

    package = load_package(MODELS / "blazepose-detector")
    pixels = np.asarray(data.astronaut())
    (person,) = PersonFinders([Finder("body", package, 0.5)]).find(jpeg_bytes(pixels))
    x, y, w, h = person.box
    assert w * h > 0.5  # the face alone is about 0.2 x 0.2 of this photo
    assert x < 0.34 and y < 0.13  # and the body box holds that face (BlazeFace: 0.34, 0.13)


# --- decoders of the models' outputs (outside bytes) ---------------------------------------------


def _settings(task_labels: int, size: int, **options: object) -> dec.Settings:
    return dec.Settings(
        labels=tuple(f"l{i}" for i in range(task_labels)),
        thresholds=np.full(task_labels, 0.5, np.float32),
        nms_iou=0.3,
        max_detections=10,
        input_size=(size, size),
        options=dict(options),
    )


floats = st.floats(width=32, allow_nan=True, allow_infinity=True)


@given(arrays(np.float32, (1, 16, 16, 1), elements=floats))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_mask_decodes_to_nothing_or_one_box_inside_the_frame(mask):
    seg = dec.Segmentation(_settings(1, 16))
    seg.check([{"name": "mask", "shape": [1, 16, 16, 1]}])
    scores = seg.mask([mask])
    assert scores.shape == (16, 16)
    for r in seg.decode([mask]):
        x0, y0, x1, y1 = r.box
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and 0.5 <= r.score <= 1


@given(
    arrays(np.float32, (1, 2254, 12), elements=floats),
    arrays(np.float32, (1, 2254, 1), elements=st.floats(-20, 20, width=32)),
)
@settings(deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
def test_any_blazepose_outputs_decode_to_valid_body_boxes(regressors, scores):
    card = json.loads((MODELS / "blazepose-detector" / "model.json").read_text())
    ssd = dec.AnchorSsd(_settings(1, 224, **card["decoder"]))
    ssd.check([{"name": "r", "shape": [1, 2254, 12]}, {"name": "s", "shape": [1, 2254, 1]}])
    for r in ssd.decode([regressors, scores]):
        x0, y0, x1, y1 = r.box
        assert np.isfinite(r.box).all() and x1 > x0 and y1 > y0


json_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4)


@given(st.dictionaries(st.sampled_from(["centre", "edge", "scale", "other"]), json_values))
def test_body_box_options_are_taken_or_refused_with_a_reason(raw):
    try:
        box = dec.BodyBox.from_options(raw)
    except dec.DecoderError as exc:
        assert "body_box" in str(exc)
    else:
        assert box is not None and box.centre >= 0 and box.edge >= 0 and box.scale > 0


@given(st.dictionaries(st.sampled_from(["activation", "min_area", "top_k"]), json_values))
def test_segment_options_are_taken_or_refused_with_a_reason(options):
    try:
        dec.Segmentation(_settings(1, 16, **options))
    except dec.DecoderError as exc:
        assert str(exc)


HOG_ONLY = PersonFinders([Finder("body", HogPeople(0.3), 0.0)])


@given(st.binary(max_size=1024))
@settings(deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow])
def test_any_bytes_give_an_image_error_or_people(data):
    try:
        found = HOG_ONLY.find(b"\xff\xd8" + data)
    except ImageError as exc:
        assert str(exc)
    else:
        assert all(d.box is not None and 0 <= d.box[0] <= 1 for d in found)


@given(st.integers(16, 200), st.integers(16, 200))
@settings(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.too_slow])
def test_hog_takes_captures_of_any_size(width, height):
    found = HOG_ONLY.find(jpeg_bytes(np.full((height, width, 3), 90, np.uint8)))
    assert found == []
