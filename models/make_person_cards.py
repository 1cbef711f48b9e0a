"""Write the cards of MediaPipe's BlazePose detector and selfie segmentation (privacy finders).

Both models ship as .tflite files in the mediapipe 0.10.14 wheel (Apache-2.0), installed with
`pip install --no-deps 'mediapipe==0.10.14'`; the cards point at the installed files (never
importing mediapipe's Python code) and carry their sha256 and goldens recorded by running them.

    python models/make_person_cards.py            # rewrite the cards and self-test images
    python models/make_person_cards.py --check    # exit 1 if the committed files differ
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from make_fixtures import _dumps, _same  # noqa: E402  (one card format for every generator)

MEDIAPIPE = {"distribution": "mediapipe", "version": "0.10.14"}
COMMON = {
    "format": 1,
    "version": "0.10.14",
    "license": "Apache-2.0",
    "author": "Google MediaPipe",
    "source": "https://pypi.org/project/mediapipe/0.10.14/",
    "labels": ["person"],
    "groups": {"person": "person"},
}

CARDS = {
    "blazepose-detector": {
        **COMMON,
        "name": "blazepose-detector",
        "task": "detect.anchor_ssd",
        "description": "MediaPipe BlazePose person detector: finds a face-on or side-on person by "
        "the face and grows the box to the whole body from two keypoints (mid-hip and the "
        "body circle). It does not find people seen from behind.",
        "input": {
            "width": 224,
            "height": 224,
            "layout": "NHWC",
            "colour": "RGB",
            "dtype": "float32",
            "resize": "letterbox",
            "pad_value": 0,
            "normalise": {"mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]},
        },
        "thresholds": {"person": 0.5},
        "notes": "Anchors and box settings from MediaPipe's pose_detection_cpu graph and "
        "pose_detection_to_roi (keypoints 0 and 1, scale 1.25).",
        "nms_iou": 0.3,
        "max_detections": 10,
        "decoder": {
            "anchors": {
                "strides": [8, 16, 32, 32, 32],
                "offset": 0.5,
                "interpolated_scale_aspect_ratio": 1.0,
            },
            "box_scale": [224, 224, 224, 224],
            "score_clip": 100.0,
            "activation": "sigmoid",
            "weighted_nms": True,
            "body_box": {"centre": 0, "edge": 1, "scale": 1.25},
        },
        "model": {
            "resource": {
                **MEDIAPIPE,
                "path": "mediapipe/modules/pose_detection/pose_detection.tflite",
            }
        },
    },
    "selfie-segmentation": {
        **COMMON,
        "name": "selfie-segmentation",
        "task": "segment",
        "description": "MediaPipe selfie segmentation: a person mask. Trained on people close "
        "to the camera; it also marks other large foreground things (a cat, coins), so it "
        "only shapes the blur inside a region another finder found, never finds people itself.",
        "input": {
            "width": 256,
            "height": 256,
            "layout": "NHWC",
            "colour": "RGB",
            "dtype": "float32",
            "resize": "stretch",
            "normalise": {"mean": [0, 0, 0], "std": [255, 255, 255]},
        },
        "thresholds": {"person": 0.5},
        "nms_iou": 0.45,
        "max_detections": 1,
        "decoder": {"activation": "none", "min_area": 0.01},
        "model": {
            "resource": {
                **MEDIAPIPE,
                "path": "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
            }
        },
    },
}


def _astronaut_jpeg(side: int) -> bytes:
    """scikit-image's astronaut photo (NASA, public domain), scaled to side x side."""
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.BOX).save(
        buf, "JPEG", quality=85
    )
    return buf.getvalue()


def build() -> dict[Path, dict[str, bytes]]:
    from agent.inference.package import golden_for, resolve_resource

    files: dict[Path, dict[str, bytes]] = {}
    for name, card in CARDS.items():
        card = dict(card)
        model = resolve_resource(card["model"]["resource"], name).read_bytes()
        photo = _astronaut_jpeg(card["input"]["width"])
        card["sha256"] = hashlib.sha256(model).hexdigest()
        card["selftest"] = golden_for(model, card, {"selftest.jpg": photo})
        files[HERE / name] = {"model.json": _dumps(card), "selftest.jpg": photo}
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for folder, contents in build().items():
        for fname, data in contents.items():
            path = folder / fname
            if args.check:
                if not path.exists() or not _same(fname, path.read_bytes(), data):
                    stale.append(str(path.relative_to(HERE.parent)))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                print(f"wrote {path.relative_to(HERE.parent)} ({len(data)} bytes)")
    if stale:
        print("out of date (run python models/make_person_cards.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
