"""Model rollout benchmark: from "manifest changed" to "new model active" on a station.

    python bench/bench_rollout.py                         # 64 MiB package, 50 shadow captures
    python bench/bench_rollout.py --mb 4 --captures 10    # a quick run

One local `fieldstation-cloud serve`, one station's model sync in this process (its buffer, its
inference worker). Prints wall and CPU seconds per stage (download, verify, self-test, shadow run
over N captures, activation); the download rate against a raw `requests` GET of the same artifact
from the same server in the same run (goal >= 0.9, medians of --repeat alternating runs); and the
inference throughput lost while a shadow run is going on (captures/s draining the buffer with and
without a shadow run in another thread, as the worker runs it and one that never steps aside).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.capture import Capture  # noqa: E402
from agent.config import parse_config  # noqa: E402
from agent.inference.pipeline import Pipeline  # noqa: E402
from agent.inference.worker import InferenceWorker  # noqa: E402
from agent.metrics import Metrics  # noqa: E402
from agent.modelsync import artifact as art  # noqa: E402
from agent.modelsync.download import download  # noqa: E402
from agent.modelsync.verify import Release, open_package, shadow_run  # noqa: E402
from agent.modelsync.worker import ModelSync  # noqa: E402
from agent.scenes import scene_jpeg  # noqa: E402
from agent.store import BUFFER_FILE, Store  # noqa: E402
from bench.figures import Figure, at_least  # noqa: E402
from cloud import rollout as ro  # noqa: E402
from cloud.auth import issue_token  # noqa: E402
from cloud.config import load_config  # noqa: E402
from cloud.models import publish_package  # noqa: E402
from cloud.process import CloudService  # noqa: E402
from cloud.service import Service  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAME = "bench-det"


def package(out: Path, version: str, pad_mb: float) -> Path:
    """The scene-animal fixture as NAME@version, padded with incompressible bytes to size."""
    folder = out / version
    shutil.copytree(ROOT / "models" / "fixtures" / "scene-animal", folder)
    card = json.loads((folder / "model.json").read_text())
    card.update(name=NAME, version=version)
    (folder / "model.json").write_text(json.dumps(card, indent=1))
    if pad_mb:
        (folder / "extra.bin").write_bytes(random.Random(version).randbytes(int(pad_mb * 2**20)))
    return folder


def station_config(data: Path, url: str, token: str, key: str, captures: int):  # type: ignore[no-untyped-def]
    return parse_config(
        f"""
[station]
id = "bench"
data_dir = "{data}"
[inference]
threads = 1
[power]
enabled = false
[upload]
enabled = false
[[upload.endpoints]]
name = "cloud"
url = "{url}"
token = "{token}"
[modelsync]
enabled = true
model = "{NAME}"
trusted_keys = ["{key}"]
shadow_captures = {captures}
download_deadline_s = 3600
shadow_deadline_s = 3600
max_package_bytes = "4 GiB"
""",
        "<bench>",
    )


def add_captures(store: Store, n: int, start: int) -> None:
    for i in range(start, start + n):
        store.add_capture(
            Capture("bench-unit", str(i), "http", scene_jpeg(i, (640, 480)), time.time())
        )


def drain(worker: InferenceWorker) -> int:
    done = 0
    while (n := worker.run_once()) > 0:
        done += n
    return done


def measure(mb: float, captures: int, repeat: int) -> dict:
    """Every figure of one run: the stages, the download against raw GETs, inference beside it."""
    args = argparse.Namespace(mb=mb, captures=captures, repeat=repeat)
    tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    _pub, public = art.generate_key(tmp / "key")
    try:
        with CloudService.start(tmp / "cloud") as cloud:
            service = Service.open(load_config(None, data_dir=str(cloud.data_dir)))
            service.db.add_station("bench")
            token = issue_token(service.db, "bench")
            for v, pad in (("1.0.0", 0.0), ("2.0.0", args.mb)):
                publish_package(
                    service.db, service.store, package(tmp / "pkgs", v, pad), tmp / "key",
                    max_bytes=1 << 40,
                )  # fmt: skip
            config = station_config(tmp / "station", cloud.url, token, public, args.captures)
            store = Store(config.data_dir / BUFFER_FILE)
            inference = InferenceWorker(store, config, Metrics())
            sync = ModelSync(store, config, inference=inference)
            one = ro.RolloutSpec(waves=(ro.Wave(("bench",)),))
            ro.create(service.db, NAME, "1.0.0", one)
            sync.poll()
            assert sync.versions.pointer().version == "1.0.0", sync.job
            add_captures(store, args.captures, 0)
            drain(inference)

            # the download against a raw GET of the same artifact, alternating
            release = Release.from_json(ro.get_release(service.db, NAME, "2.0.0"))
            url = cloud.url + release.url
            ours, raw = [], []
            for i in range(args.repeat):
                t0 = time.perf_counter()
                with (
                    requests.get(url, headers=sync.source.headers, stream=True, timeout=60) as r,
                    (tmp / f"raw{i}").open("wb") as f,
                ):
                    for block in r.iter_content(256 << 10):
                        f.write(block)
                raw.append(release.size / (time.perf_counter() - t0))
                part = tmp / f"ours{i}.part"
                t0 = time.perf_counter()
                download(sync.session, sync.source, release, part, attempts=1, deadline_s=600,
                         chunk_bytes=256 << 10, max_bytes=1 << 40)  # fmt: skip
                ours.append(release.size / (time.perf_counter() - t0))
                part.unlink()
                (tmp / f"raw{i}").unlink()

            # manifest changed -> new model active, through the worker
            ro.create(service.db, NAME, "2.0.0", one)
            t0, c0 = time.perf_counter(), time.thread_time()
            sync.poll()
            total, cpu = time.perf_counter() - t0, time.thread_time() - c0
            assert sync.versions.pointer().version == "2.0.0", sync.job

            # inference throughput with and without a shadow run beside it (alternating, medians)
            k = max(100, 2 * args.captures)
            add_captures(store, 10, 9_000)
            drain(inference)  # warm the new model up
            v1 = Pipeline(open_package(sync.versions.versions / "1.0.0"))
            v2 = Pipeline(open_package(sync.versions.versions / "2.0.0"))
            shots = sync._recent_captures(args.captures)
            rates: dict[str, list[float]] = {"alone": [], "yielding": [], "greedy": []}
            n = 0
            for _ in range(args.repeat):
                for mode in rates:
                    add_captures(store, k, 10_000 + n * k)
                    n += 1
                    stop = threading.Event()

                    def shadows(stop: threading.Event = stop, mode: str = mode) -> None:
                        busy = sync.inference_busy if mode == "yielding" else (lambda: False)
                        while not stop.is_set():
                            shadow_run(v2, v1, shots, 3600, busy=busy)

                    side = threading.Thread(target=shadows, daemon=True)
                    if mode != "alone":
                        side.start()
                    t0 = time.perf_counter()
                    rates[mode].append(drain(inference) / (time.perf_counter() - t0))
                    stop.set()
                    if mode != "alone":
                        side.join()
            alone = statistics.median(rates["alone"])
            yielding = statistics.median(rates["yielding"])
            greedy = statistics.median(rates["greedy"])
            service.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rate_ours, rate_raw = statistics.median(ours), statistics.median(raw)
    doc = {
        "package_bytes": release.size,
        "shadow_captures": args.captures,
        "stages": {
            k: {"wall_s": round(w, 4), "cpu_s": round(c, 4)} for k, (w, c) in sync.stages.items()
        },
        "total": {"wall_s": round(total, 4), "cpu_s": round(cpu, 4)},
        "download_MiB_s": round(rate_ours / 2**20, 1),
        "raw_requests_MiB_s": round(rate_raw / 2**20, 1),
        "download_ratio": round(rate_ours / rate_raw, 3),
        "inference_captures_s": round(alone, 2),
        "inference_captures_s_during_shadow": round(yielding, 2),
        "inference_throughput_lost": round(1 - yielding / alone, 3),
        "inference_captures_s_beside_a_greedy_shadow": round(greedy, 2),
        "inference_throughput_lost_greedy": round(1 - greedy / alone, 3),
    }
    return doc


def run(quick: bool) -> list[Figure]:
    mb, captures, repeat = (4.0, 10, 2) if quick else (64.0, 50, 5)
    d = measure(mb, captures, repeat)
    greedy = d["inference_captures_s_beside_a_greedy_shadow"]
    return [
        Figure(
            f"model download, {d['package_bytes'] / 2**20:.0f} MiB package",
            d["download_MiB_s"],
            "MiB/s",
            d["raw_requests_MiB_s"],
            "raw requests GET of the same artifact, same server",
            at_least(0.9),
            f"medians of {repeat} alternating runs",
        ),
        Figure(
            "manifest changed -> new model active, wall",
            d["total"]["wall_s"],
            "s",
            note=f"CPU {d['total']['cpu_s']:.2f} s; shadow run over {captures} captures",
        ),
        Figure(
            "inference during a shadow run",
            d["inference_captures_s_during_shadow"],
            "captures/s",
            d["inference_captures_s"],
            "the same worker with no shadow run",
            note=f"as the worker runs it (steps aside); {greedy:g} captures/s beside one that never does",
        ),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=64, help="package size in MiB")
    ap.add_argument("--captures", type=int, default=50, help="captures in the shadow run")
    ap.add_argument("--repeat", type=int, default=5, help="alternating runs (medians)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    doc = measure(args.mb, args.captures, args.repeat)
    total, cpu = doc["total"]["wall_s"], doc["total"]["cpu_s"]
    alone = doc["inference_captures_s"]
    yielding = doc["inference_captures_s_during_shadow"]
    greedy = doc["inference_captures_s_beside_a_greedy_shadow"]
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"package {doc['package_bytes'] / 2**20:.1f} MiB, shadow run over {args.captures} captures"
    )
    print(f"{'stage':<10} {'wall s':>8} {'cpu s':>8}")
    for stage, d in doc["stages"].items():
        print(f"{stage:<10} {d['wall_s']:>8.3f} {d['cpu_s']:>8.3f}")
    print(f"{'total':<10} {total:>8.3f} {cpu:>8.3f}   (manifest changed -> new model active)")
    print(
        f"download {doc['download_MiB_s']} MiB/s vs raw requests {doc['raw_requests_MiB_s']} MiB/s:"
        f" ratio {doc['download_ratio']} (goal >= 0.9)"
    )
    print(
        f"inference {alone:.1f} captures/s alone, {yielding:.1f} during a shadow run as the worker "
        f"runs it (steps aside for live captures): {doc['inference_throughput_lost']:.0%} lost; "
        f"{greedy:.1f} beside one that never steps aside: "
        f"{doc['inference_throughput_lost_greedy']:.0%} lost"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
