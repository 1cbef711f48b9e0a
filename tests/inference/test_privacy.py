"""Privacy finds people by their bodies as well as their faces, on scikit-image's real photos.

The finders are the ones a station runs: BlazeFace full range (faces), OpenCV's HOG people
detector and MediaPipe's BlazePose detector (bodies), MediaPipe's selfie segmentation (masks).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.inference.package import Detection
from agent.inference.privacy import (
    BODY_HEADROOM,
    BODY_MARGIN,
    HOG,
    PersonFinders,
    blur_people,
    load_finders,
    person_alpha,
)
from agent.inference.worker import InferenceWorker

from .conftest import MODELS, add_capture, inference_config, jpeg_bytes

PEOPLE = ("astronaut", "camera")
# where the face (with hair and ears) is, in pixels of the 512x512 photo: covered, no face detector
# can fire, so whatever is still found was found by a body finder
FACES = {"astronaut": (150, 40, 300, 190), "camera": (145, 55, 285, 205)}
ANIMALS_AND_THINGS = (
    "chelsea", "coffee", "rocket", "coins", "clock", "hubble_deep_field", "moon", "horse",
    "grass", "gravel", "brick", "immunohistochemistry", "cell", "page", "text", "logo",
    "colorwheel", "retina",
)  # fmt: skip
FACE_MODELS = [str(MODELS / "blazeface-full-range")]
BODY_MODELS = [HOG, str(MODELS / "blazepose-detector")]
MASK = str(MODELS / "selfie-segmentation")


def photo(name: str) -> np.ndarray:
    from skimage import data

    pixels = getattr(data, name)()
    if pixels.dtype != np.uint8:
        pixels = (pixels * 255).astype(np.uint8) if pixels.max() <= 1 else pixels.astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


def face_covered(name: str) -> np.ndarray:
    pixels = photo(name).copy()
    x0, y0, x1, y1 = FACES[name]
    pixels[y0:y1, x0:x1] = 128
    return pixels


@pytest.fixture(scope="session")
def mediapipe_installed() -> None:
    from importlib import metadata

    try:
        metadata.distribution("mediapipe")
    except metadata.PackageNotFoundError:
        pytest.fail("mediapipe is missing: pip install --no-deps 'mediapipe==0.10.14'")


@pytest.fixture(scope="module")
def finders(
    tmp_path_factory: pytest.TempPathFactory, blazeface_installed, mediapipe_installed
) -> PersonFinders:
    config = inference_config(
        tmp_path_factory.mktemp("privacy"),
        face_models=FACE_MODELS, body_models=BODY_MODELS, person_mask=MASK,
    )  # fmt: skip
    loaded = load_finders(config.inference, Path(config.data_dir) / "models")
    assert loaded is not None
    return loaded


def by_finder(found: list[Detection]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for d in found:
        out.setdefault(d.model, []).append(round(d.score, 2))
    return out


@pytest.mark.parametrize("name", PEOPLE)
def test_people_in_the_photos_are_found(finders, name):
    found = finders.find(jpeg_bytes(photo(name)))
    assert found, f"nobody found in {name}"
    assert all(d.group == "person" for d in found)


@pytest.mark.parametrize("name", PEOPLE)
def test_with_the_face_covered_a_body_finder_still_finds_them(finders, name):
    found = finders.find(jpeg_bytes(face_covered(name)))
    fired = by_finder(found)
    assert "blazeface-full-range" not in fired, f"the face is not covered: {fired}"
    assert "opencv-hog-people" in fired, f"no body finder fired on {name} without a face: {fired}"
    (person,) = [d for d in found if d.model == "opencv-hog-people"]
    x, y, w, h = person.box
    fx0, fy0, fx1, fy1 = (v / 512 for v in FACES[name])
    # the region, grown as it is blurred, reaches the covered head
    assert x - w * BODY_MARGIN < fx1 and y - h * BODY_HEADROOM < fy1 and x + w > fx0


@pytest.mark.parametrize("name", ANIMALS_AND_THINGS)
def test_animal_and_object_photos_are_not_flagged(finders, name):
    found = finders.find(jpeg_bytes(photo(name)))
    assert not found, f"{name}: {by_finder(found)}"


# --- blurring ------------------------------------------------------------------------------------


def _pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float32)


def test_a_body_region_is_blurred_inside_and_nothing_changes_outside(finders):
    original = jpeg_bytes(face_covered("camera"))
    people = finders.find(original)
    (body,) = people
    blurred = blur_people(original, people, mask=finders.mask)
    before, after = _pixels(original), _pixels(blurred)
    h, w = before.shape[:2]
    x, y, bw, bh = body.box
    x0, x1 = int((x - bw * BODY_MARGIN) * w), int((x + bw * (1 + BODY_MARGIN)) * w)
    y0 = max(0, int((y - bh * BODY_HEADROOM) * h))
    region = np.abs(before - after)[y0:, max(0, x0) : x1].mean()
    outside = np.ones((h, w), bool)
    outside[max(0, y0 - 16) :, max(0, x0 - 16) : x1 + 16] = False  # 16 px: two JPEG blocks
    assert region > 12, f"the person barely changed (mean abs diff {region:.1f})"
    assert np.abs(before - after)[outside].mean() < 2.5


def test_the_mask_blurs_the_person_and_not_the_background_around_them(finders):
    original = jpeg_bytes(photo("astronaut"))
    whole = Detection("person", "person", 0.9, (0.0, 0.0, 1.0, 1.0), "test", "1")
    blurred = blur_people(original, [whole], mask=finders.mask)
    before, after = _pixels(original), _pixels(blurred)
    alpha = person_alpha(finders.mask, Image.open(io.BytesIO(original)).convert("RGB"))
    assert alpha is not None, "the mask found nobody on the astronaut photo"
    diff = np.abs(before - after).mean(axis=2)
    x0, y0, x1, y1 = FACES["astronaut"]
    face = diff[y0:y1, x0:x1].mean()
    background = diff[alpha == 0].mean()
    assert (alpha == 0).mean() > 0.2, "the mask took in most of the frame"
    assert face > 15, f"the face barely changed (mean abs diff {face:.1f})"
    assert background < 2.5, f"the background changed (mean abs diff {background:.1f})"


def test_a_blurred_face_cannot_be_found_again(finders):
    original = jpeg_bytes(photo("astronaut"))
    people = finders.find(original)
    blurred = blur_people(original, people, mask=finders.mask)
    faces = [f for f in finders.finders if f.kind == "face"]
    assert not PersonFinders(faces).find(blurred)


# --- on the station ------------------------------------------------------------------------------


@pytest.fixture
def privacy_worker(tmp_path, store, metrics, blazeface_installed, mediapipe_installed):
    def make(policy: str, **keys: object) -> InferenceWorker:
        config = inference_config(
            tmp_path,
            detector=str(MODELS / "blazeface-full-range"), person_policy=policy,
            face_models=FACE_MODELS, body_models=BODY_MODELS, person_mask=MASK, **keys,
        )  # fmt: skip
        worker = InferenceWorker(store, config, metrics)
        worker.reload_if_changed()
        assert worker.pipeline is not None, worker.last_error
        return worker

    return make


def test_the_analysis_records_which_finder_fired_with_what_score(privacy_worker, store):
    worker = privacy_worker("drop")
    cid = add_capture(store, jpeg_bytes(face_covered("camera")))
    worker.run_once()
    row = store.get_capture(cid)
    assert (row["state"], row["empty"], row["upload_variant"]) == ("analysed", 0, "none")
    assert store.read_image(cid, "blurred") is None  # drop: metadata only
    rows = store.detections(cid)
    assert [(r["label"], r["grp"], r["model"]) for r in rows] == [
        ("person", "person", "opencv-hog-people")
    ]
    assert rows[0]["score"] >= worker.section.hog_threshold
    models = json.loads(row["analysis"])["models"]
    assert models[0] == "blazeface-full-range@0.6.0"  # the detector, run once, not again
    assert {m.split("@")[0] for m in models[1:]} == {
        "opencv-hog-people", "blazepose-detector", "selfie-segmentation",
    }  # fmt: skip


def test_blur_stores_a_blurred_copy_when_only_the_body_was_found(privacy_worker, store):
    worker = privacy_worker("blur")
    original = jpeg_bytes(face_covered("astronaut"))
    cid = add_capture(store, original)
    worker.run_once()
    row = store.get_capture(cid)
    assert row["upload_variant"] == "blurred"
    blurred = store.read_image(cid, "blurred")
    assert blurred is not None and blurred != original
    assert store.read_image(cid) == original  # stays on the station until the blurred copy is up


def test_faces_only_leaves_a_faceless_person_unflagged(privacy_worker, store):
    worker = privacy_worker("blur", person_finders="faces")
    cid = add_capture(store, jpeg_bytes(face_covered("camera")))
    worker.run_once()
    row = store.get_capture(cid)
    assert (row["empty"], row["upload_variant"]) == (1, "original")


def test_keep_runs_no_privacy_finder(privacy_worker, store):
    worker = privacy_worker("keep")
    cid = add_capture(store, jpeg_bytes(face_covered("camera")))
    worker.run_once()
    assert store.detections(cid) == []


def test_a_missing_privacy_package_keeps_captures_waiting(tmp_path, store, metrics):
    config = inference_config(
        tmp_path,
        detector=str(MODELS / "fixtures" / "blob-ssd"), body_models=[str(tmp_path / "missing")],
    )  # fmt: skip
    worker = InferenceWorker(store, config, metrics)
    worker.reload_if_changed()
    cid = add_capture(store, jpeg_bytes(face_covered("camera")))
    assert worker.run_once() == 0
    assert store.get_capture(cid)["state"] == "received"  # never leaves unchecked
    assert "missing" in worker.last_error and "does not exist" in worker.last_error
    text = metrics.render().decode()
    assert 'fieldstation_inference_model_errors_total{role="privacy"} 1.0' in text


def test_a_default_station_blurs_a_person_seen_without_a_face(
    tmp_path, store, metrics, blazeface_installed
):
    # only the detector is named: person_policy and the finders are the defaults a station gets
    config = inference_config(tmp_path, detector=str(MODELS / "blazeface-full-range"))
    assert config.inference.person_policy == "blur"
    worker = InferenceWorker(store, config, metrics)
    worker.reload_if_changed()
    assert worker.pipeline is not None, worker.last_error
    cid = add_capture(store, jpeg_bytes(face_covered("camera")))
    worker.run_once()
    row = store.get_capture(cid)
    assert (row["empty"], row["upload_variant"]) == (0, "blurred")
    assert [r["model"] for r in store.detections(cid)] == ["opencv-hog-people"]
