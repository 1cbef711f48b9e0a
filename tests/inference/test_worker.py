"""The inference worker on a real buffer: what it stores, privacy, bad captures, bad packages."""

from __future__ import annotations

import io
import json
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from agent.inference.package import PackageError
from agent.inference.privacy import BLUR_MARGIN
from agent.inference.worker import InferenceWorker

from .conftest import (
    MODELS,
    add_capture,
    blob_scene,
    copy_package,
    inference_config,
    jpeg_bytes,
)


def make_worker(tmp_path, store, metrics, **keys):
    config = inference_config(tmp_path, **keys)
    return InferenceWorker(store, config, metrics)


def capture_row(store, capture_id):
    return store.get_capture(capture_id)


def detections(store, capture_id):
    with store.read() as conn:
        return [
            dict(r)
            for r in conn.execute(
                "SELECT * FROM detections WHERE capture_id = ? ORDER BY id", (capture_id,)
            )
        ]


@pytest.fixture
def face_worker(tmp_path, store, metrics, blazeface_installed):
    def make(policy: str) -> InferenceWorker:
        worker = make_worker(
            tmp_path, store, metrics,
            detector=str(MODELS / "blazeface-full-range"), person_policy=policy,
            body_models=[],  # faces only: the default body finder has its tests in test_privacy
        )  # fmt: skip
        worker.reload_if_changed()
        assert worker.pipeline is not None, worker.last_error
        return worker

    return make


def test_a_photo_with_a_face_is_analysed_and_its_detection_stored(face_worker, store, photos):
    worker = face_worker("keep")
    cid = add_capture(store, photos["astronaut"].read_bytes())
    assert worker.run_once() == 1
    row = capture_row(store, cid)
    assert row["state"] == "analysed"
    assert row["empty"] == 0
    assert row["upload_variant"] == "original"
    (det,) = detections(store, cid)
    assert (det["label"], det["grp"], det["model"], det["model_version"]) == (
        "face", "person", "blazeface-full-range", "0.6.0",
    )  # fmt: skip
    assert 0.3 < det["x"] + det["w"] / 2 < 0.5
    analysis = json.loads(row["analysis"])
    assert analysis["models"] == ["blazeface-full-range@0.6.0"]
    assert {"decode", "preprocess", "invoke", "postprocess"} <= set(analysis["timings_ms"])


def test_a_photo_without_anyone_is_marked_empty(face_worker, store, photos):
    worker = face_worker("blur")
    cid = add_capture(store, photos["coffee"].read_bytes())
    worker.run_once()
    row = capture_row(store, cid)
    assert (row["state"], row["empty"], row["upload_variant"]) == ("analysed", 1, "original")
    assert detections(store, cid) == []
    assert store.read_image(cid, "blurred") is None


def test_blur_policy_blurs_the_face_and_nothing_else(face_worker, store, photos):
    worker = face_worker("blur")
    original = photos["astronaut"].read_bytes()
    cid = add_capture(store, original)
    worker.run_once()
    row = capture_row(store, cid)
    assert row["upload_variant"] == "blurred"
    blurred = store.read_image(cid, "blurred")
    assert blurred is not None and blurred[:2] == b"\xff\xd8"
    assert store.read_image(cid) == original  # the original stays, untouched, on the station
    (det,) = detections(store, cid)
    before = np.asarray(Image.open(io.BytesIO(original)).convert("RGB"), np.float32)
    after = np.asarray(Image.open(io.BytesIO(blurred)).convert("RGB"), np.float32)
    assert before.shape == after.shape
    h, w = before.shape[:2]
    x0, y0 = int(det["x"] * w), int(det["y"] * h)
    x1, y1 = int((det["x"] + det["w"]) * w), int((det["y"] + det["h"]) * h)
    inside = np.abs(before[y0:y1, x0:x1] - after[y0:y1, x0:x1]).mean()
    # outside: everything at least 16 px (two JPEG blocks) beyond the blurred margin
    mx = int(det["w"] * w * BLUR_MARGIN) + 16
    my = int(det["h"] * h * BLUR_MARGIN) + 16
    mask = np.ones((h, w), bool)
    mask[max(0, y0 - my) : y1 + my, max(0, x0 - mx) : x1 + mx] = False
    outside = np.abs(before[mask] - after[mask]).mean()
    assert inside > 12, f"face barely changed (mean abs diff {inside:.1f})"
    assert outside < 2.5, f"pixels outside the face changed (mean abs diff {outside:.1f})"
    # and the blurred face is no longer found
    from agent.inference.pipeline import Pipeline

    assert Pipeline(worker.pipeline.detector).analyse(blurred).detections == []


def test_drop_policy_uploads_metadata_only(face_worker, store, photos):
    worker = face_worker("drop")
    cid = add_capture(store, photos["camera"].read_bytes())
    worker.run_once()
    row = capture_row(store, cid)
    assert (row["state"], row["upload_variant"]) == ("analysed", "none")
    assert store.read_image(cid, "blurred") is None
    assert len(detections(store, cid)) == 1


def test_on_result_hook_sees_each_capture_after_its_commit(face_worker, store, photos):
    worker = face_worker("blur")
    seen = []

    def hook(capture_id, found):
        seen.append((capture_id, [d.label for d in found], capture_row(store, capture_id)["state"]))

    worker.on_result = hook
    a = add_capture(store, photos["astronaut"].read_bytes())
    b = add_capture(store, photos["chelsea"].read_bytes())
    worker.run_once()
    assert seen == [(a, ["face"], "analysed"), (b, [], "analysed")]


def test_detector_then_classifier_stores_crop_labels_under_their_parent(tmp_path, store, metrics):
    worker = make_worker(
        tmp_path, store, metrics,
        detector=str(MODELS / "fixtures" / "blob-ssd"),
        classifier=str(MODELS / "fixtures" / "colour-int8"),
        classify_groups=["animal"], person_policy="keep",
    )  # fmt: skip
    worker.reload_if_changed()
    frame = blob_scene(1600, 1200, [(0.5, 1 / 6, 0.25, 1 / 3)], colour=(255, 255, 255))
    frame[200:400, 800:1200] = (250, 250, 250)
    frame[210:390, 810:1190] = (40, 60, 250)  # a blue animal inside its bright outline
    cid = add_capture(store, jpeg_bytes(frame))
    worker.run_once()
    rows = detections(store, cid)
    parent = [r for r in rows if r["parent_id"] is None]
    children = [r for r in rows if r["parent_id"] is not None]
    assert [r["label"] for r in parent] == ["bright_blob"]
    assert [(r["label"], r["model"], r["parent_id"]) for r in children] == [
        ("blue", "colour-int8", parent[0]["id"])
    ]
    assert children[0]["x"] is None  # a whole-crop label, the box is its parent's


def test_metrics_count_outcomes_groups_and_stage_times(face_worker, store, photos, metrics):
    worker = face_worker("blur")
    add_capture(store, photos["astronaut"].read_bytes())
    add_capture(store, photos["coffee"].read_bytes())
    add_capture(store, b"\xff\xd8 not really a jpeg")
    worker.run_once()
    text = metrics.render().decode()
    assert 'fieldstation_inference_captures_total{outcome="analysed"} 1.0' in text
    assert 'fieldstation_inference_captures_total{outcome="empty"} 1.0' in text
    assert 'fieldstation_inference_captures_total{outcome="failed"} 1.0' in text
    assert 'fieldstation_inference_detections_total{group="person"} 1.0' in text
    assert 'fieldstation_inference_seconds_count{stage="invoke"} 2.0' in text


# --- bad images ----------------------------------------------------------------------------------


def _sof_patched(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header claiming another size (no pixels allocated)."""
    i = jpeg.index(b"\xff\xc0")
    out = bytearray(jpeg)
    out[i + 5 : i + 7] = height.to_bytes(2, "big")
    out[i + 7 : i + 9] = width.to_bytes(2, "big")
    return bytes(out)


BAD_IMAGES = {
    "garbage": (lambda good: b"\x00\x01garbage" * 100, "not a JPEG"),
    "empty": (lambda good: b"", "empty image"),
    "truncated": (lambda good: good[: len(good) // 3], "corrupt JPEG"),
    "header only": (lambda good: good[:200], "JPEG"),
    "1x1": (lambda good: jpeg_bytes(np.zeros((1, 1, 3), np.uint8)), "1x1"),
    "20000x20000 header": (lambda good: _sof_patched(good, 20000, 20000), "20000x20000"),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_a_bad_capture_is_failed_with_the_reason_and_kept(tmp_path, store, metrics, kind):
    worker = make_worker(tmp_path, store, metrics, detector=str(MODELS / "fixtures" / "blob-ssd"))
    worker.reload_if_changed()
    good = jpeg_bytes(blob_scene(320, 240, [(0.5, 0.25, 0.25, 0.25)]))
    make, expected = BAD_IMAGES[kind]
    bad = make(good)
    bad_id = add_capture(store, bad) if bad else None
    if bad_id is None:  # the buffer refuses nothing; an empty capture is stored like any other
        bad_id = add_capture(store, bad)
    good_id = add_capture(store, good)
    worker.run_once()
    row = capture_row(store, bad_id)
    assert row["state"] == "failed"
    assert "bad image" in row["error"] and expected in row["error"], row["error"]
    assert store.read_image(bad_id) == bad  # kept for a human to look at
    assert capture_row(store, good_id)["state"] == "analysed"  # the worker carried on


def test_the_20000_pixel_header_is_refused_before_decoding(tmp_path):
    from agent.inference.image import ImageError, open_jpeg

    huge = _sof_patched(jpeg_bytes(np.zeros((32, 32, 3), np.uint8)), 20000, 20000)
    with pytest.raises(ImageError, match="400000000 pixels"):
        open_jpeg(huge)


# --- bad packages --------------------------------------------------------------------------------


def test_a_bad_package_is_never_activated_and_the_previous_keeps_running(tmp_path, store, metrics):
    installed = tmp_path / "models"
    installed.mkdir()
    pkg = copy_package("blob-yolo-nc", installed)
    worker = make_worker(tmp_path, store, metrics, detector=str(pkg), reload_interval_s=1)
    worker.reload_if_changed()
    before = worker.pipeline
    assert before is not None
    # an update lands with a corrupted model: refused, the old pipeline stays
    model = pkg / "model.tflite"
    model.write_bytes(model.read_bytes()[:500])
    with pytest.raises(PackageError, match="blob-yolo-nc"):
        worker.activate(pkg)
    worker.reload_if_changed(force=True)
    assert worker.pipeline is before
    assert "blob-yolo-nc" in worker.last_error and "sha256" in worker.last_error
    cid = add_capture(store, jpeg_bytes(blob_scene(64, 64, [(0, 0, 0.25, 0.25)])))
    worker.run_once()
    assert capture_row(store, cid)["state"] == "analysed"
    text = metrics.render().decode()
    assert 'fieldstation_inference_model_errors_total{role="detector"}' in text


def test_with_no_loadable_model_captures_wait_in_received(tmp_path, store, metrics):
    worker = make_worker(tmp_path, store, metrics, detector=str(tmp_path / "missing"))
    worker.reload_if_changed()
    cid = add_capture(store, jpeg_bytes(np.zeros((64, 64, 3), np.uint8)))
    assert worker.run_once() == 0
    assert capture_row(store, cid)["state"] == "received"
    assert "does not exist" in worker.last_error
    # the package is installed later: picked up at the next reload
    shutil.copytree(MODELS / "fixtures" / "blob-ssd", tmp_path / "missing")
    worker.reload_if_changed(force=True)
    assert worker.run_once() == 1
    assert capture_row(store, cid)["state"] == "analysed"


def test_without_a_configured_model_captures_are_passed_on_unanalysed(tmp_path, store, metrics):
    worker = make_worker(tmp_path, store, metrics)
    cid = add_capture(store, jpeg_bytes(np.zeros((64, 64, 3), np.uint8)))
    worker.run_once()
    row = capture_row(store, cid)
    assert row["state"] == "analysed" and row["empty"] is None
    assert json.loads(row["analysis"])["skipped"] == "no model configured"


def test_run_loop_drains_the_buffer_and_stops_when_told(tmp_path, store, metrics):
    worker = make_worker(
        tmp_path, store, metrics,
        detector=str(MODELS / "fixtures" / "blob-yolo-cn"), poll_interval_s=0.05,
    )  # fmt: skip
    done = threading.Event()
    ids = []
    worker.on_result = lambda cid, found: (len(ids) == 3 or True) and _maybe(ids, cid, done)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        for i in range(3):
            add_capture(store, jpeg_bytes(blob_scene(128, 96, [(0.25 * i, 0, 0.25, 0.25)])))
        assert done.wait(60)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert len(ids) == 3


def _maybe(ids, cid, done):
    ids.append(cid)
    if len(ids) == 3:
        done.set()


def test_a_capture_moved_on_during_analysis_is_left_alone(tmp_path, store, metrics):
    worker = make_worker(tmp_path, store, metrics, detector=str(MODELS / "fixtures" / "blob-ssd"))
    worker.reload_if_changed()
    cid = add_capture(store, jpeg_bytes(blob_scene(64, 64, [(0, 0, 0.25, 0.25)])))
    worker.on_result = lambda *_: pytest.fail("no result for a capture that was not stored")
    store.mark_failed(cid, "failed by an operator")
    assert worker.process(cid) is None
    row = capture_row(store, cid)
    assert (row["state"], row["error"]) == ("failed", "failed by an operator")
    assert detections(store, cid) == []
