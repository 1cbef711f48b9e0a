"""Cloud upload benchmark: captures/s and p50/p99 of batch uploads vs a bare ASGI handler.

Four concurrent clients send batches of 50 KiB captures (multipart, as the station uploader does)
to `fieldstation-cloud serve` and, in the same run, to a bare ASGI app under the same uvicorn
settings that only reads the same request bodies. Printed ratios are cloud / bare.
Backends: SQLite + local filesystem (the default: pack files, fsync on), the same with one file per
image (`sqlite-files`, `[storage] backend = "local"`) or without fsync, and PostgreSQL + moto S3.
Each line also shows the server process's CPU per batch (from /proc, Linux), the budget the ratio
depends on.

    python bench/bench_cloud.py [--clients 4] [--batches 25] [--batch-size 10]
                                [--backends sqlite,sqlite-files,sqlite-nofsync,postgres]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.broker import free_port  # noqa: E402
from bench.figures import Figure, at_least  # noqa: E402
from cloud.process import CloudService  # noqa: E402

CAPTURE_BYTES = 50 * 1024


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The baseline: read the whole request body, answer a small JSON."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    size = 0
    more = True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps({"read": size}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def build_batches(station_id: str, count: int, size: int) -> list[tuple[bytes, str]]:
    """Prebuilt (body, content type) pairs, so client-side encoding is not measured."""
    batches = []
    for b in range(count):
        items, files = [], []
        for i in range(size):
            data = b"\xff\xd8\xff\xe0" + os.urandom(CAPTURE_BYTES - 4)
            digest = hashlib.sha256(data).hexdigest()
            capture_id = f"{station_id}-{b}-{i}-{uuid.uuid4().hex[:8]}"
            part = f"img{i}"
            items.append(
                {
                    "capture_id": capture_id,
                    "unit_id": "unit-a",
                    "path": "mqtt",
                    "sha256": digest,
                    "size": len(data),
                    "received_at": time.time(),
                    "captured_at": time.time(),
                    "unit_time": None,
                    "unit_time_kind": None,
                    "trigger": "pir",
                    "variant": "full",
                    "image_part": part,
                    "image_sha256": digest,
                    "empty": False,
                    "detections": [
                        {
                            "label": "animal",
                            "group": "animal",
                            "score": 0.9,
                            "box": [0.1, 0.1, 0.5, 0.5],
                            "model": "m",
                            "model_version": "1",
                        }
                    ],
                }
            )
            files.append((part, (f"{capture_id}.jpg", data, "image/jpeg")))
        manifest = (
            "manifest",
            (None, json.dumps({"station_id": station_id, "items": items}), "application/json"),
        )
        prepared = requests.Request("POST", "http://x/", files=[manifest, *files]).prepare()
        batches.append((prepared.body, prepared.headers["Content-Type"]))
    return batches


def run_clients(
    url: str, tokens: list[str], work: list[list[tuple[bytes, str]]]
) -> dict[str, float]:
    """Each client thread sends its batches back to back; return throughput and latencies."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(token: str, batches: list[tuple[bytes, str]]) -> None:
        with requests.Session() as session:
            for body, ctype in batches:
                start = time.perf_counter()
                response = session.post(
                    url + "/v1/captures/batch",
                    data=body,
                    headers={"Content-Type": ctype, "Authorization": f"Bearer {token}"},
                    timeout=120,
                )
                elapsed = time.perf_counter() - start
                ok = response.status_code == 200 and (
                    "results" not in response.text
                    or all(r["status"] == "stored" for r in response.json()["results"])
                )
                with lock:
                    latencies.append(elapsed)
                    if not ok:
                        errors.append(f"{response.status_code} {response.text[:200]}")

    threads = [
        threading.Thread(target=client, args=(t, w)) for t, w in zip(tokens, work, strict=True)
    ]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, first: {errors[0]}")
    captures = sum(len(json.loads(_manifest_of(b))["items"]) for w in work for b, _ in w)
    ordered = sorted(latencies)
    return {
        "captures_per_s": captures / wall,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))] * 1000,
        "mib_per_s": sum(len(b) for w in work for b, _ in w) / wall / 2**20,
    }


def _manifest_of(body: bytes) -> bytes:
    start = body.index(b"\r\n\r\n") + 4
    return body[start : body.index(b"\r\n--", start)]


@contextmanager
def bare_server() -> Any:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench_cloud:bare_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=Path(__file__).parent,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url + "/", process)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads so far (Linux /proc; else 0)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, url: str, tokens: list[str], work: Any) -> dict[str, float]:
    """run_clients plus the server's CPU milliseconds per batch over the round."""
    before = cpu_seconds(pid)
    result = run_clients(url, tokens, work)
    batches = sum(len(w) for w in work)
    result["server_cpu_ms"] = (cpu_seconds(pid) - before) / batches * 1000
    return result


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer")


@contextmanager
def moto_subprocess() -> Any:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url + "/moto-api/", process)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def backend_env(name: str, stack: ExitStack) -> dict[str, str]:
    """FIELDSTATION_CLOUD_* variables for one backend (starting PostgreSQL and moto if needed)."""
    env = {
        "FIELDSTATION_CLOUD_SERVER_LOG_LEVEL": "warning",
        "FIELDSTATION_CLOUD_LIMITS_RATE_LIMIT_PER_MINUTE": "0",
    }
    if name == "sqlite-nofsync":
        env["FIELDSTATION_CLOUD_STORAGE_FSYNC"] = "false"
    if name == "sqlite-files":
        env["FIELDSTATION_CLOUD_STORAGE_BACKEND"] = "local"
    if name == "postgres":
        from tests.cloud.cloud_services import postgres_server

        pg = stack.enter_context(postgres_server())
        s3 = stack.enter_context(moto_subprocess())
        env.update(
            FIELDSTATION_CLOUD_DATABASE_URL=pg.create_database(),
            FIELDSTATION_CLOUD_STORAGE_BACKEND="s3",
            FIELDSTATION_CLOUD_STORAGE_ENDPOINT_URL=s3,
            FIELDSTATION_CLOUD_STORAGE_BUCKET="bench",
            FIELDSTATION_CLOUD_STORAGE_CREATE_BUCKET="true",
            FIELDSTATION_CLOUD_STORAGE_ACCESS_KEY_ID="bench",
            FIELDSTATION_CLOUD_STORAGE_SECRET_ACCESS_KEY="bench",
        )
    return env


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batches", type=int, default=25, help="batches per client")
    parser.add_argument("--batch-size", type=int, default=10, help="captures per batch")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/cloud rounds")
    parser.add_argument(
        "--backends",
        default="sqlite,postgres",
        help="comma list of sqlite, sqlite-files, sqlite-nofsync, postgres",
    )
    args = parser.parse_args()
    print(
        f"{args.clients} clients x {args.batches} batches x {args.batch_size} captures of "
        f"{CAPTURE_BYTES // 1024} KiB"
    )
    bare_rounds, targets = measure(
        args.clients, args.batches, args.batch_size, args.rounds, args.backends.split(",")
    )
    bare = _median(bare_rounds)
    print(_line("bare ASGI handler (reads body)", bare, None))
    for name, rounds in targets.items():
        ratios = sorted(
            r["captures_per_s"] / b["captures_per_s"]
            for r, b in zip(rounds, bare_rounds, strict=True)
        )
        print(
            _line(LABELS[name], _median(rounds), bare)
            + f"  (per-round ratios {', '.join(f'{x:.2f}' for x in ratios)})"
        )


LABELS = {
    "sqlite": "cloud: SQLite + local FS (fsync)",
    "sqlite-nofsync": "cloud: SQLite + local FS (no fsync)",
    "sqlite-files": "cloud: SQLite + a file per image (fsync)",
    "postgres": "cloud: PostgreSQL + moto S3",
}


def measure(
    clients: int, batches: int, batch_size: int, rounds: int, backends: list[str]
) -> tuple[list[dict[str, float]], dict[str, list[dict[str, float]]]]:
    """Rounds of the bare handler and of each backend, alternating; their per-round figures."""
    stations = [f"bench-{i}" for i in range(clients)]
    warm = [build_batches(s, 2, batch_size) for s in stations]
    # Bare and cloud alternate round by round, so load from elsewhere on the machine hits both;
    # the printed figures are the medians over the rounds.
    bare_rounds: list[dict[str, float]] = []
    with ExitStack() as stack:
        bare_url, bare_pid = stack.enter_context(bare_server())
        run_clients(bare_url, ["-"] * clients, warm)
        targets = {}
        for name in backends:
            env = backend_env(name, stack)
            service = stack.enter_context(
                CloudService.start(Path(tempfile.mkdtemp(prefix="bench-cloud-")), env=env)
            )
            tokens = [service.add_station(s) for s in stations]
            run_clients(service.url, tokens, [build_batches(s, 2, batch_size) for s in stations])
            targets[name] = (service, tokens, [])
        for _ in range(rounds):
            work = [build_batches(s, batches, batch_size) for s in stations]
            bare_rounds.append(measured(bare_pid, bare_url, ["-"] * clients, work))
            for service, tokens, done in targets.values():
                work = [build_batches(s, batches, batch_size) for s in stations]
                done.append(measured(service.process.pid, service.url, tokens, work))
    return bare_rounds, {name: done for name, (_, _, done) in targets.items()}


def run(quick: bool) -> list[Figure]:
    backends = ["sqlite", "sqlite-files"] if quick else ["sqlite", "sqlite-files", "postgres"]
    bare_rounds, targets = measure(4, 3 if quick else 25, 10, 1 if quick else 3, backends)
    bare = _median(bare_rounds)
    out = []
    for name, rounds in targets.items():
        m = _median(rounds)
        out.append(
            Figure(
                f"cloud batch ingest, {LABELS[name].removeprefix('cloud: ')}, durable",
                m["captures_per_s"],
                "captures/s",
                bare["captures_per_s"],
                "bare ASGI handler reading the same bodies",
                at_least(0.6) if name.startswith("sqlite") else None,
                f"server CPU {m['server_cpu_ms']:.1f} ms/batch (bare "
                f"{bare['server_cpu_ms']:.1f}), p50 {m['p50_ms']:.0f} ms",
            )
        )
    return out


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def _line(label: str, m: dict[str, float], bare: dict[str, float] | None) -> str:
    text = (
        f"{label:<40} {m['captures_per_s']:8.1f} captures/s  {m['mib_per_s']:6.1f} MiB/s  "
        f"p50 {m['p50_ms']:7.1f} ms  p99 {m['p99_ms']:7.1f} ms  "
        f"server CPU {m['server_cpu_ms']:5.1f} ms/batch"
    )
    if bare:
        text += (
            f"  | ratio throughput {m['captures_per_s'] / bare['captures_per_s']:.2f}"
            f"  p50 x{m['p50_ms'] / bare['p50_ms']:.2f}"
        )
    return text


if __name__ == "__main__":
    main()
