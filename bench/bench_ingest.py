"""Ingest throughput of 50 KiB JPEGs, acknowledged after a durable commit, against raw ceilings.

    python bench/bench_ingest.py [--captures 300] [--units 4] [--idle-seconds 60] [--legacy-units]

Measured in one run, on this machine:
  ceilings  raw paho publish -> Mosquitto -> subscriber for the same payloads (QoS 1), and raw
            sqlite3 inserts of the same blobs, one transaction each, WAL + synchronous=FULL;
  station   `fieldstation run` as its own process: captures/s over MQTT (N units, each waiting for
            its ACK as the firmware does) and over serial (a pty per unit), its RSS idle and under
            load, and its CPU seconds per idle minute. Units say HELLO with max_chunk first and send
            at the chunk size the station's CONFIG gives them (--legacy-units: 16 KiB chunks and no
            HELLO, as units before the negotiation did).
Prints a table and the ratios against the lower ceiling (goal: >= 0.7; idle CPU < 0.6 s/min).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import requests
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import protocol as p  # noqa: E402
from agent.broker import PrivateBroker, free_port  # noqa: E402
from agent.esp32.virtual import PtySerialLink  # noqa: E402
from agent.scenes import scene_jpeg  # noqa: E402
from bench.figures import Figure, at_least, at_most  # noqa: E402

PAYLOAD = 50 * 1024


def payloads(n: int) -> list[bytes]:
    base = [scene_jpeg(i, (900, 700), 80) for i in range(8)]
    out = []
    for i in range(n):
        j = base[i % len(base)]
        # exactly 50 KiB, still a JPEG (SOI ... EOI), distinct per capture
        body = (j[:-2] + i.to_bytes(4, "little") * PAYLOAD)[: PAYLOAD - 2]
        out.append(body + b"\xff\xd9")
    return out


def thread_cpu(tid: int) -> float:
    """User + system CPU seconds of one thread of this process (Linux /proc)."""
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raw_sqlite(blobs: list[bytes], folder: Path, cpu: list[float] | None = None) -> float:
    conn = sqlite3.connect(folder / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
    t0, c0 = time.perf_counter(), time.thread_time()
    for b in blobs:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (b) VALUES (?)", (b,))
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(time.thread_time() - c0)
    conn.close()
    return len(blobs) / dt


def raw_mqtt(blobs: list[bytes], broker: PrivateBroker, cpu: list[float] | None = None) -> float:
    got = threading.Event()
    count = [0]

    def on_message(c, u, m):  # noqa: ANN001
        count[0] += 1
        if count[0] == len(blobs):
            got.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe("bench/raw", qos=1)
    # the subscriber's network loop on a thread of ours, so its CPU is readable on its own
    receiver = threading.Thread(target=sub.loop_forever, daemon=True)
    receiver.start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
    pub.max_inflight_messages_set(64)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    infos = [pub.publish("bench/raw", b, qos=1) for b in blobs]
    for info in infos:
        info.wait_for_publish(30)
    got.wait(60)
    dt = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(thread_cpu(receiver.native_id or 0))
    pub.loop_stop()
    sub.disconnect()
    receiver.join(10)
    return count[0] / dt


# ingest alone: inference (bench_inference.py) would add its own commit per capture
NO_INFERENCE = "[inference]\nenabled = false\n"


def start_station(
    folder: Path, broker: PrivateBroker, ports: list[str], inference: str = NO_INFERENCE
) -> tuple:
    http = free_port()
    cfg = folder / "station.toml"
    port_list = ", ".join(f'"{x}"' for x in ports)
    cfg.write_text(
        f'[station]\nid = "bench"\ndata_dir = "{folder / "station"}"\n'
        f'[http]\nlisten = "127.0.0.1:{http}"\n'
        f'[mqtt]\nenabled = true\nport = {broker.port}\nclient_id = "bench-station"\n'
        f"[serial]\nports = [{port_list}]\n"
        f'[log]\nlevel = "warning"\n' + inference
    )
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)])
    for _ in range(300):
        try:
            if requests.get(f"http://127.0.0.1:{http}/readyz", timeout=1).ok:
                status = requests.get(f"http://127.0.0.1:{http}/api/status", timeout=2).json()
                if all(status["links"].values()):
                    return proc, http
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("station did not start")


def encode_captures(unit_id: str, blobs: list[bytes], chunk: int = 16384) -> list[list[bytes]]:
    """Every capture's frames, encoded before the clock starts: the unit's CPU is not measured."""
    return [
        [p.encode_frame(m, n) for m in p.chunk_capture(unit_id, n, jpeg, chunk, 1)]
        for n, jpeg in enumerate(blobs, start=1)
    ]


LEGACY_CHUNK = 16384


def announce(unit_id: str) -> list[bytes]:
    """A unit's HELLO (it can send a whole frame) and CONFIG_REPORT (at 16 KiB chunks now)."""
    hello = p.Hello(unit_id, "bench", "esp32s3", "24:0a:c4:00:00:01", max_chunk=p.MAX_CHUNK)
    report = p.ConfigReport(unit_id, 300, 8, 12, chunk_size=LEGACY_CHUNK)
    return [p.encode_frame(hello, 1), p.encode_frame(report, 2)]


def negotiate_mqtt(broker: PrivateBroker, ids: list[str]) -> dict[str, int]:
    """Each unit's chunk size from the station's CONFIG answering its HELLO."""
    chunks: dict[str, int] = {}
    got = threading.Event()

    def on_message(c, userdata, msg):  # noqa: ANN001
        m = p.decode_frame(msg.payload).message()
        if isinstance(m, p.Config) and m.chunk_size:
            chunks[msg.topic.split("/")[2]] = m.chunk_size
            if len(chunks) == len(ids):
                got.set()

    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-hello")
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe("wildcam/bench/+/cmd", qos=1)
    subscribed.wait(10)
    for u in ids:
        for frame in announce(u):
            client.publish(f"wildcam/bench/{u}/hello", frame, qos=1)
    if not got.wait(30):
        raise RuntimeError(f"the station told only {sorted(chunks)} their chunk size")
    client.loop_stop()
    client.disconnect()
    return chunks


def negotiate_serial(link: PtySerialLink, unit_id: str) -> int:
    for frame in announce(unit_id):
        link.send(frame, "hello")
    while (f := link.recv(30)) is not None:
        m = f.message()
        if isinstance(m, p.Config) and m.chunk_size:
            return m.chunk_size
    raise RuntimeError(f"the station did not tell {unit_id} a chunk size")


def drive_mqtt(
    broker: PrivateBroker, units: int, blobs: list[bytes], legacy: bool = False
) -> float:
    """N units over one client, each stop-and-wait as the firmware is: next capture after ACK."""
    ids = [f"bench-m{i}" for i in range(units)]
    chunk = dict.fromkeys(ids, LEGACY_CHUNK) if legacy else negotiate_mqtt(broker, ids)
    frames = {u: encode_captures(u, blobs[i::units], chunk[u]) for i, u in enumerate(ids)}
    nxt = dict.fromkeys(ids, 0)
    done = threading.Event()
    acked = [0]
    lock = threading.Lock()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-units")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)

    def send(u: str) -> None:
        for f in frames[u][nxt[u]]:
            client.publish(f"wildcam/bench/{u}/capture", f, qos=1)

    def on_message(c, userdata, msg):  # noqa: ANN001
        u = msg.topic.split("/")[2]
        if not isinstance(p.decode_frame(msg.payload).message(), p.Ack):
            raise RuntimeError(f"station answered {p.decode_frame(msg.payload).message()}")
        with lock:
            acked[0] += 1
            nxt[u] += 1
            if acked[0] == len(blobs):
                done.set()
            more = nxt[u] < len(frames[u])
        if more:
            send(u)

    subscribed = threading.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe("wildcam/bench/+/ack", qos=1)
    subscribed.wait(10)
    from agent.esp32.virtual import no_delay

    no_delay(client)
    t0 = time.perf_counter()
    for u in ids:
        send(u)
    if not done.wait(300):
        raise RuntimeError(f"only {acked[0]} of {len(blobs)} captures acknowledged")
    dt = time.perf_counter() - t0
    client.loop_stop()
    return acked[0] / dt


def drive_serial(masters: list[int], blobs: list[bytes], legacy: bool = False) -> float:
    """One unit per pty, stop-and-wait."""
    n = len(masters)
    acked = [0] * n
    links = [PtySerialLink(m) for m in masters]
    chunks = [
        LEGACY_CHUNK if legacy else negotiate_serial(link, f"bench-s{i}")
        for i, link in enumerate(links)
    ]

    def unit(i: int) -> None:
        link = links[i]
        captures = encode_captures(f"bench-s{i}", blobs[i::n], chunks[i])
        for k, capture in enumerate(captures, start=1):
            link.send(b"".join(capture), "capture")
            while True:
                f = link.recv(30)
                if f is None:
                    raise RuntimeError("no ACK within 30 s")
                msg = f.message()
                if isinstance(msg, p.Nak):
                    raise RuntimeError(f"station refused capture {k} of unit {i}: {msg}")
                if isinstance(msg, p.Ack) and msg.capture_id == k:
                    acked[i] += 1
                    break

    threads = [threading.Thread(target=unit, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(acked) / (time.perf_counter() - t0)


def measure(
    captures: int, units: int, idle_seconds: float, legacy: bool = False
) -> dict[str, float]:
    """Every figure of one run: the raw ceilings first, then the station as its own process."""
    folder = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    blobs = payloads(captures)
    results: dict[str, float] = {}
    with PrivateBroker() as broker:
        sqlite_cpu: list[float] = []
        mqtt_cpu: list[float] = []
        results["raw_sqlite_per_s"] = raw_sqlite(blobs, folder, sqlite_cpu)
        results["raw_mqtt_per_s"] = raw_mqtt(blobs, broker, mqtt_cpu)
        results["raw_sqlite_cpu_ms_per_capture"] = sqlite_cpu[0] * 1000 / len(blobs)
        results["raw_mqtt_receive_cpu_ms_per_capture"] = mqtt_cpu[0] * 1000 / len(blobs)
        ptys = []
        for _ in range(units):
            master, slave = os.openpty()
            tty.setraw(slave)
            ptys.append((master, slave, os.ttyname(slave)))
        proc, http = start_station(folder, broker, [x[2] for x in ptys])
        ps = psutil.Process(proc.pid)
        try:
            time.sleep(2)
            results["rss_idle_mib"] = ps.memory_info().rss / 2**20
            cpu0 = sum(ps.cpu_times()[:2])
            time.sleep(idle_seconds)
            idle_cpu = sum(ps.cpu_times()[:2]) - cpu0
            results["idle_cpu_s_per_min"] = idle_cpu * 60 / idle_seconds

            peak = [0.0]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.2):
                    peak[0] = max(peak[0], ps.memory_info().rss / 2**20)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            cpu0 = sum(ps.cpu_times()[:2])
            results["station_mqtt_per_s"] = drive_mqtt(broker, units, blobs, legacy)
            cpu1 = sum(ps.cpu_times()[:2])
            results["station_serial_per_s"] = drive_serial([x[0] for x in ptys], blobs, legacy)
            cpu2 = sum(ps.cpu_times()[:2])
            results["cpu_ms_per_capture_mqtt"] = (cpu1 - cpu0) * 1000 / len(blobs)
            results["cpu_ms_per_capture_serial"] = (cpu2 - cpu1) * 1000 / len(blobs)
            stop.set()
            results["rss_load_peak_mib"] = peak[0]
        finally:
            proc.terminate()
            proc.wait(30)
        # the raw ceilings again after the station, keeping the higher: load from elsewhere on a
        # shared machine then flatters neither side of the ratio
        again = folder / "again"
        again.mkdir()
        results["raw_sqlite_per_s"] = max(results["raw_sqlite_per_s"], raw_sqlite(blobs, again))
        results["raw_mqtt_per_s"] = max(results["raw_mqtt_per_s"], raw_mqtt(blobs, broker))
    ceiling = min(results["raw_sqlite_per_s"], results["raw_mqtt_per_s"])
    results["lower_ceiling_per_s"] = ceiling
    results["ratio_mqtt"] = results["station_mqtt_per_s"] / ceiling
    results["ratio_serial"] = results["station_serial_per_s"] / ceiling
    return results


def rss_with_detector(captures: int) -> tuple[float, float]:
    """The station as the demo runs it (its detector, privacy on): RSS idle, and peak under load."""
    from agent.demo import DEMO_MODEL

    folder = Path(tempfile.mkdtemp(prefix="bench-ingest-rss-"))
    blobs = payloads(captures)
    inference = f'[inference]\ndetector = "{DEMO_MODEL}"\nthreads = 1\n'
    with PrivateBroker() as broker:
        proc, http = start_station(folder, broker, [], inference)
        ps = psutil.Process(proc.pid)
        try:
            time.sleep(3)
            idle = ps.memory_info().rss / 2**20
            peak = [idle]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.2):
                    peak[0] = max(peak[0], ps.memory_info().rss / 2**20)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            drive_mqtt(broker, 4, blobs)
            # until inference has caught up with the captures just stored
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                status = requests.get(f"http://127.0.0.1:{http}/api/status", timeout=5).json()
                if not status.get("queue", {}).get("by_state", {}).get("received", {}).get("count"):
                    break
                time.sleep(0.5)
            stop.set()
            sampler.join(5)
        finally:
            proc.terminate()
            proc.wait(30)
    return idle, peak[0]


def run(quick: bool) -> list[Figure]:
    r = measure(200 if quick else 1000, 8, 5.0 if quick else 60.0)
    ceiling = r["lower_ceiling_per_s"]
    which = "raw SQLite" if ceiling == r["raw_sqlite_per_s"] else "raw paho"
    raw_cpu = r["raw_sqlite_cpu_ms_per_capture"] + r["raw_mqtt_receive_cpu_ms_per_capture"]
    out = [
        Figure(
            f"durable ingest over {path}, 8 units waiting for ACKs",
            r[f"station_{path}_per_s"],
            "captures/s",
            ceiling,
            f"lower ceiling: {which}",
            at_least(0.7),
        )
        for path in ("mqtt", "serial")
    ]
    out += [
        Figure(
            f"station CPU per capture at ingest, {path}",
            r[f"cpu_ms_per_capture_{path}"],
            "ms",
            raw_cpu,
            "raw SQLite insert CPU + raw paho receive CPU",
            at_most(1.5),
        )
        for path in ("mqtt", "serial")
    ]
    out += [
        Figure("station RSS idle (no detector)", r["rss_idle_mib"], "MiB", None, "",
               at_most(80, "value")),
        Figure("station RSS under ingest load (no detector)", r["rss_load_peak_mib"], "MiB",
               None, "", at_most(120, "value")),
        Figure("station idle CPU", r["idle_cpu_s_per_min"], "s/min", None, "",
               at_most(0.6, "value")),
    ]  # fmt: skip
    idle, load = rss_with_detector(60 if quick else 500)
    note = "as `fieldstation demo` runs it: the demo detector, privacy finders on"
    out += [
        Figure("station RSS idle, detector loaded", idle, "MiB", None, "", at_most(80, "value"),
               note),
        Figure("station RSS under load, detector loaded", load, "MiB", None, "",
               at_most(120, "value"), note),
    ]  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--captures", type=int, default=300)
    ap.add_argument("--units", type=int, default=4)
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--legacy-units", action="store_true", help="units without chunk negotiation (16 KiB)"
    )
    args = ap.parse_args()
    results = measure(args.captures, args.units, args.idle_seconds, args.legacy_units)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"50 KiB captures, {args.captures} per path, {args.units} units, same run")
    for k, v in results.items():
        print(f"  {k:<22} {v:10.2f}")
    goal = "met" if min(results["ratio_mqtt"], results["ratio_serial"]) >= 0.7 else "NOT met"
    print(
        f"goal >= 0.7 of the lower ceiling: {goal}; idle CPU goal < 0.6 s/min: "
        f"{'met' if results['idle_cpu_s_per_min'] < 0.6 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
