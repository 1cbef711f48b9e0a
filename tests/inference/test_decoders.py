"""Each decoder family on its fixture model, run by LiteRT on real JPEGs."""

from __future__ import annotations

import numpy as np
import pytest

from agent.inference.decoders import iou_one_to_many, nms, ssd_anchors
from agent.inference.package import load_package
from agent.inference.pipeline import Pipeline

from .conftest import FIXTURES, blob_scene, jpeg_bytes

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 210)}


@pytest.mark.parametrize("model", ["colour-float", "colour-uint8", "colour-int8"])
@pytest.mark.parametrize("colour", list(COLOURS))
def test_classifier_names_the_dominant_colour_with_float_and_quantised_tensors(model, colour):
    package = load_package(FIXTURES / model)
    frame = np.zeros((120, 160, 3), np.uint8) + np.array(COLOURS[colour], np.uint8)
    (result,) = Pipeline(package).analyse(jpeg_bytes(frame)).detections
    assert result.label == colour
    assert result.box is None  # whole-frame classification
    assert 0.9 < result.score <= 1.0


def test_logits_classifier_applies_softmax_so_scores_sum_to_one():
    package = load_package(FIXTURES / "colour-uint8")
    assert package.card.decoder["activation"] == "softmax"
    frame = np.zeros((64, 64, 3), np.uint8) + np.array([140, 120, 100], np.uint8)
    tensor, _ = package.preprocess(_image(frame))
    (logits,) = package.invoke(tensor)
    e = np.exp(logits - logits.max())
    best = (e / e.sum()).max()
    (result,) = package.postprocess([logits], None)
    assert result.score == pytest.approx(best, abs=1e-5)


def _image(a):
    from PIL import Image

    return Image.fromarray(a)


DETECTORS = ["blob-ssd", "blob-yolo-nc", "blob-yolo-cn"]


@pytest.mark.parametrize("model", DETECTORS)
def test_detector_box_maps_back_to_the_original_through_letterboxing(model):
    """A 4:3 1600x1200 frame letterboxed into a square input: bars top and bottom."""
    pipeline = Pipeline(load_package(FIXTURES / model))
    # the 64x64 input holds the frame at 64x48, rows 8..56; cell (col 2, row 1) is input
    # pixels x 32..48, y 16..32, i.e. frame x 0.5..0.75, y (16-8)/48..(32-8)/48
    target = (0.5, 8 / 48, 0.25, 16 / 48)
    frame = blob_scene(1600, 1200, [target])
    analysis = pipeline.analyse(jpeg_bytes(frame))
    assert analysis.size == (1600, 1200)
    (found,) = [d for d in analysis.detections if d.label == "bright_blob"]
    assert found.group == "animal"
    assert np.allclose(found.box, target, atol=0.01)


def test_both_yolo_layouts_find_the_same_objects():
    boxes = [(0.0, 0.75, 0.25, 0.25), (0.5, 0.25, 0.25, 0.25)]
    frame = jpeg_bytes(blob_scene(640, 640, boxes))
    results = []
    for model in ("blob-yolo-nc", "blob-yolo-cn"):
        found = Pipeline(load_package(FIXTURES / model)).analyse(frame).detections
        results.append(sorted((d.label, tuple(np.round(d.box, 3))) for d in found))
    assert results[0] == results[1]
    assert results[0] == sorted(("bright_blob", b) for b in boxes)


def test_yolo_takes_the_best_class_per_box():
    frame = jpeg_bytes(blob_scene(640, 640, [(0.25, 0.5, 0.25, 0.25)], colour=(255, 0, 0)))
    found = Pipeline(load_package(FIXTURES / "blob-yolo-cn")).analyse(frame).detections
    assert [(d.label, d.group) for d in found] == [("red_blob", "vehicle")]


def test_an_empty_frame_is_empty_for_every_detector():
    frame = jpeg_bytes(np.zeros((300, 400, 3), np.uint8))
    for model in DETECTORS:
        assert Pipeline(load_package(FIXTURES / model)).analyse(frame).empty


def test_nms_keeps_the_best_of_overlapping_boxes_per_class():
    boxes = np.array([[0, 0, 1, 1], [0.05, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3]], np.float32)
    scores = np.array([0.6, 0.9, 0.8, 0.7], np.float32)
    classes = np.array([0, 0, 1, 0])
    kept = nms(boxes, scores, classes, iou=0.5, limit=10)
    assert [(c, round(s, 2)) for c, s, _ in kept] == [(0, 0.9), (1, 0.8), (0, 0.7)]


def test_weighted_nms_blends_suppressed_boxes_by_score():
    boxes = np.array([[0, 0, 1, 1], [0.2, 0, 1.2, 1]], np.float32)
    kept = nms(boxes, np.array([0.75, 0.25]), np.array([0, 0]), iou=0.3, limit=5, weighted=True)
    assert np.allclose(kept[0][2], [0.05, 0, 1.05, 1])


def test_iou_of_disjoint_identical_and_half_overlapping_boxes():
    box = np.array([0, 0, 2, 2], np.float32)
    others = np.array([[5, 5, 6, 6], [0, 0, 2, 2], [1, 0, 3, 2]], np.float32)
    assert np.allclose(iou_one_to_many(box, others), [0, 1, 1 / 3])


def test_blazeface_anchor_counts_match_mediapipe():
    assert len(ssd_anchors(128, 128, [8, 16, 16, 16])) == 896
    assert len(ssd_anchors(192, 192, [4], interpolated_scale_aspect_ratio=0.0)) == 2304


@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.int8])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bgr", [False, True])
def test_normalisation_matches_the_card_formula_and_the_tensor_quantisation(
    dtype, per_channel, bgr
):
    from agent.inference.image import Normaliser

    mean = np.array([123.7, 116.3, 103.5] if per_channel else [127.5] * 3, np.float32)
    std = np.array([58.4, 57.1, 57.4] if per_channel else [127.5] * 3, np.float32)
    quant = {np.float32: (0.0, 0), np.uint8: (1 / 64, 128), np.int8: (1 / 64, 0)}[dtype]
    pixels = np.random.default_rng(3).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    got = Normaliser(dtype=np.dtype(dtype), mean=mean, std=std, quantisation=quant, bgr=bgr)(pixels)
    src = pixels[..., ::-1] if bgr else pixels
    real = (src.astype(np.float64) - mean) / std
    if dtype is not np.float32:
        info = np.iinfo(dtype)
        real = np.clip(np.rint(real / quant[0] + quant[1]), info.min, info.max)
    assert got.shape == (1, 7, 5, 3) and got.dtype == dtype
    assert np.allclose(got[0], real, atol=1e-5 if dtype is np.float32 else 1)


def test_the_demo_fixture_finds_the_animal_in_two_of_three_demo_scenes():
    from agent.scenes import scene_jpeg

    pipeline = Pipeline(load_package(FIXTURES / "scene-animal"))
    for seed in range(1, 13):
        found = pipeline.analyse(scene_jpeg(seed)).detections
        expected = 1 if seed % 3 else 0  # scenes.py draws an animal unless seed % 3 == 0
        assert [d.label for d in found] == ["animal"] * expected, seed
