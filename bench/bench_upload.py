"""Upload benchmark: drain a backlog to one local `fieldstation-cloud serve`, against raw POSTs.

    python bench/bench_upload.py                 # 10,000 captures of 50 KiB
    python bench/bench_upload.py --captures 1000 # a quick run

Raw baseline: the same batches, encoded before the clock starts, POSTed back-to-back with one
`requests.Session` to the same server in the same run (a second station id, so the server does the
same work). Prints drain rates and their ratio (goal >= 0.85), socket bytes per payload byte (goal
<= 1.02 for full images), and the station's CPU seconds per 1,000 captures uploaded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.capture import Capture  # noqa: E402
from agent.config import parse_config  # noqa: E402
from agent.metrics import Metrics  # noqa: E402
from agent.store import PENDING_STATES, Store  # noqa: E402
from agent.upload import ledger  # noqa: E402
from agent.upload.batch import build_item, encode  # noqa: E402
from agent.upload.worker import Uploader  # noqa: E402
from bench.figures import Figure, at_least, at_most  # noqa: E402
from cloud.process import CloudService  # noqa: E402


class SocketBytes:
    """Counts bytes through every socket of this process (request and answer, no TCP/IP headers)."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self._orig = {}

    def install(self) -> None:
        counter = self
        cls = socket.socket
        for name in ("send", "sendall", "recv_into", "recv"):
            self._orig[name] = getattr(cls, name)
        orig = self._orig

        def send(sock, data, *a):
            n = orig["send"](sock, data, *a)
            counter.sent += n
            return n

        def sendall(sock, data, *a):
            counter.sent += len(data)
            return orig["sendall"](sock, data, *a)

        def recv_into(sock, buf, *a):
            n = orig["recv_into"](sock, buf, *a)
            counter.received += n
            return n

        def recv(sock, *a):
            data = orig["recv"](sock, *a)
            counter.received += len(data)
            return data

        cls.send, cls.sendall, cls.recv_into, cls.recv = send, sendall, recv_into, recv

    def reset(self) -> tuple[int, int]:
        out = (self.sent, self.received)
        self.sent = self.received = 0
        return out


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fill_buffer(store: Store, n: int, size: int, unit: str) -> int:
    """n captures of `size` bytes (JPEG magic + random bytes), in one transaction (setup only)."""
    now = time.time()
    captures = (
        Capture(
            unit,
            str(i),
            "serial",
            b"\xff\xd8\xff\xe0" + os.urandom(size - 4),
            now + i,
            unit_time=int(now) + i,
            unit_time_kind="epoch_s",
            trigger="pir",
        )
        for i in range(n)
    )
    store.import_captures(captures)
    return n * size


def raw_batches(store: Store, station_id: str, batch: int) -> list[tuple[bytes, str]]:
    """The same captures as ready multipart bodies: all the client work done before timing."""
    with store.read() as conn:
        rows = ledger.candidates(
            conn, "x", ["x"], ("received",), thumbnails_first=False, empty_full=True, limit=10**9
        )
    out = []
    for i in range(0, len(rows), batch):
        items = [
            build_item(
                r, [], store.read_image, empty_policy="full", thumbnails_first=False, thumbnail_px=1
            )
            for r in rows[i : i + batch]
        ]
        out.append(encode(station_id, items))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captures", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=50 * 1024, help="bytes per capture")
    ap.add_argument("--batch", type=int, default=50, help="captures per batch (both sides)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (buffers, cloud)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    try:
        figures = drain(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(figures, args)


def run(quick: bool) -> list[Figure]:
    args = argparse.Namespace(captures=1000 if quick else 10_000, size=50 * 1024, batch=50)
    work = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    try:
        f = drain(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    backlog = f"{f['captures']:,} x {f['capture_bytes'] // 1024} KiB"
    return [
        Figure(
            f"backlog drain, {backlog}",
            f["uploader_captures_per_s"],
            "captures/s",
            f["raw_captures_per_s"],
            "raw requests.Session POSTs, same bytes, same server",
            at_least(0.85),
        ),
        Figure(
            "upload wire bytes sent",
            f["wire_sent_per_payload_byte"],
            "B per payload B",
            1.0,
            f"the payload (raw POSTs: {f['raw_wire_sent_per_payload_byte']:.4f})",
            at_most(1.02),
        ),
        Figure(
            "station CPU per 1,000 captures uploaded",
            f["station_cpu_s_per_1000"],
            "s",
            f["raw_client_cpu_s_per_1000"],
            "raw requests client CPU",
        ),
    ]


def drain(args: argparse.Namespace, work: Path) -> dict:
    env = {"FIELDSTATION_CLOUD_LIMITS_RATE_LIMIT_PER_MINUTE": "0"}
    counter = SocketBytes()
    with CloudService.start(work / "cloud", env=env) as cloud:
        raw_token = cloud.add_station("bench-raw")
        token = cloud.add_station("bench-station")

        raw_store = Store(work / "raw.sqlite3", check_on_start=False)
        fill_buffer(raw_store, args.captures, args.size, "raw")
        bodies = raw_batches(raw_store, "bench-raw", args.batch)
        store = Store(work / "station.sqlite3", check_on_start=False)
        payload = fill_buffer(store, args.captures, args.size, "cam")
        config = parse_config(
            f"""
[station]
id = "bench-station"
[inference]
enabled = false
[upload]
batch_max_items = {args.batch}
batch_max_bytes = {args.batch * (args.size + 4096)}
heartbeat_interval_s = 0
idle_poll_s = 0.05
[[upload.endpoints]]
name = "local"
url = "{cloud.url}"
token = "{token}"
""",
            "<bench>",
        )
        counter.install()

        # raw: requests.Session POSTs of the same bytes, half before and half after the uploader,
        # so both meet the server's database at the same average size
        session = requests.Session()
        headers = {"Authorization": f"Bearer {raw_token}"}
        half = len(bodies) // 2
        raw_s = raw_cpu = 0.0
        raw_sent = 0

        def post_raw(chunk: list[tuple[bytes, str]]) -> None:
            nonlocal raw_s, raw_cpu, raw_sent
            counter.reset()
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            for body, content_type in chunk:
                r = session.post(
                    cloud.url + "/v1/captures/batch",
                    data=body,
                    headers={**headers, "Content-Type": content_type},
                    timeout=120,
                )
                r.raise_for_status()
            raw_s += time.perf_counter() - t0
            raw_cpu += cpu_seconds() - cpu0
            raw_sent += counter.reset()[0]

        post_raw(bodies[:half])

        # the uploader draining the buffer
        uploader = Uploader(store, config, Metrics())
        stop = threading.Event()
        thread = threading.Thread(target=uploader.run, args=(stop,), daemon=True)
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        thread.start()
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            # indexed, so the bench's own polling costs next to nothing
            left = store.count_in_states(PENDING_STATES)
            if not left:
                break
            time.sleep(0.005)  # a quick run drains in about a second: a coarse poll would skew it
        up_s = time.perf_counter() - t0
        up_cpu = cpu_seconds() - cpu0
        stop.set()
        thread.join(30)
        up_sent, up_recv = counter.reset()
        if left:
            raise SystemExit(f"uploader did not drain: {left} captures left")
        post_raw(bodies[half:])

    n = args.captures
    return {
        "captures": n,
        "capture_bytes": args.size,
        "batch": args.batch,
        "raw_captures_per_s": round(n / raw_s, 1),
        "uploader_captures_per_s": round(n / up_s, 1),
        "rate_ratio": round(raw_s / up_s, 3),
        "raw_mib_per_s": round(payload / raw_s / 2**20, 1),
        "uploader_mib_per_s": round(payload / up_s / 2**20, 1),
        "wire_sent_per_payload_byte": round(up_sent / payload, 4),
        "wire_total_per_payload_byte": round((up_sent + up_recv) / payload, 4),
        "raw_wire_sent_per_payload_byte": round(raw_sent / payload, 4),
        "station_cpu_s_per_1000": round(up_cpu / n * 1000, 3),
        "raw_client_cpu_s_per_1000": round(raw_cpu / n * 1000, 3),
    }


def report(figures: dict, args: argparse.Namespace) -> None:
    n = figures["captures"]
    print(
        f"backlog: {n} captures of {args.size} bytes, batches of {args.batch}, one local endpoint"
    )
    print(
        f"raw requests.Session POSTs : {figures['raw_captures_per_s']:>8} captures/s "
        f"({figures['raw_mib_per_s']} MiB/s)"
    )
    print(
        f"uploader drain            : {figures['uploader_captures_per_s']:>8} captures/s "
        f"({figures['uploader_mib_per_s']} MiB/s)"
    )
    print(f"drain rate vs raw         : {figures['rate_ratio']:.3f}  (goal >= 0.85)")
    print(
        f"bytes sent per payload byte: {figures['wire_sent_per_payload_byte']:.4f} "
        f"(raw {figures['raw_wire_sent_per_payload_byte']:.4f}; goal <= 1.02); "
        f"both directions {figures['wire_total_per_payload_byte']:.4f}"
    )
    print(
        f"station CPU per 1000 captures: {figures['station_cpu_s_per_1000']:.3f} s "
        f"(raw client {figures['raw_client_cpu_s_per_1000']:.3f} s)"
    )
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
