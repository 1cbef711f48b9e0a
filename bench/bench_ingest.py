"""Ingest throughput of 50 KiB JPEGs, acknowledged after a durable commit, against raw ceilings.

    python bench/bench_ingest.py [--captures 300] [--units 4] [--idle-seconds 60]

Measured in one run, on this machine:
  ceilings  raw paho publish -> Mosquitto -> subscriber for the same payloads (QoS 1), and raw
            sqlite3 inserts of the same blobs, one transaction each, WAL + synchronous=FULL;
  station   `fieldstation run` as its own process: captures/s over MQTT (N units, each waiting for
            its ACK as the firmware does) and over serial (a pty per unit), its RSS idle and under
            load, and its CPU seconds per idle minute.
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


def raw_sqlite(blobs: list[bytes], folder: Path) -> float:
    conn = sqlite3.connect(folder / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
    t0 = time.perf_counter()
    for b in blobs:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (b) VALUES (?)", (b,))
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return len(blobs) / dt


def raw_mqtt(blobs: list[bytes], broker: PrivateBroker) -> float:
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
    sub.loop_start()
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
    pub.loop_stop()
    sub.loop_stop()
    return count[0] / dt


def start_station(folder: Path, broker: PrivateBroker, ports: list[str]) -> tuple:
    http = free_port()
    cfg = folder / "station.toml"
    port_list = ", ".join(f'"{x}"' for x in ports)
    cfg.write_text(
        f'[station]\nid = "bench"\ndata_dir = "{folder / "station"}"\n'
        f'[http]\nlisten = "127.0.0.1:{http}"\n'
        f'[mqtt]\nenabled = true\nport = {broker.port}\nclient_id = "bench-station"\n'
        f"[serial]\nports = [{port_list}]\n"
        f'[log]\nlevel = "warning"\n'
        # ingest alone: inference (bench_inference.py) would add its own commit per capture
        "[inference]\nenabled = false\n"
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


def drive_mqtt(broker: PrivateBroker, units: int, blobs: list[bytes]) -> float:
    """N units over one client, each stop-and-wait as the firmware is: next capture after ACK."""
    ids = [f"bench-m{i}" for i in range(units)]
    frames = {u: encode_captures(u, blobs[i::units]) for i, u in enumerate(ids)}
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
    from agent.ingest.mqtt import no_delay

    no_delay(client)
    t0 = time.perf_counter()
    for u in ids:
        send(u)
    if not done.wait(300):
        raise RuntimeError(f"only {acked[0]} of {len(blobs)} captures acknowledged")
    dt = time.perf_counter() - t0
    client.loop_stop()
    return acked[0] / dt


def drive_serial(masters: list[int], blobs: list[bytes]) -> float:
    """One unit per pty, stop-and-wait."""
    n = len(masters)
    acked = [0] * n

    def unit(i: int) -> None:
        link = PtySerialLink(masters[i])
        for k, capture in enumerate(encode_captures(f"bench-s{i}", blobs[i::n]), start=1):
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--captures", type=int, default=300)
    ap.add_argument("--units", type=int, default=4)
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    blobs = payloads(args.captures)
    results: dict[str, float] = {}
    with PrivateBroker() as broker:
        results["raw_sqlite_per_s"] = raw_sqlite(blobs, folder)
        results["raw_mqtt_per_s"] = raw_mqtt(blobs, broker)
        ptys = []
        for _ in range(args.units):
            master, slave = os.openpty()
            tty.setraw(slave)
            ptys.append((master, slave, os.ttyname(slave)))
        proc, http = start_station(folder, broker, [x[2] for x in ptys])
        ps = psutil.Process(proc.pid)
        try:
            time.sleep(2)
            results["rss_idle_mib"] = ps.memory_info().rss / 2**20
            cpu0 = sum(ps.cpu_times()[:2])
            time.sleep(args.idle_seconds)
            idle_cpu = sum(ps.cpu_times()[:2]) - cpu0
            results["idle_cpu_s_per_min"] = idle_cpu * 60 / args.idle_seconds

            peak = [0.0]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.2):
                    peak[0] = max(peak[0], ps.memory_info().rss / 2**20)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            cpu0 = sum(ps.cpu_times()[:2])
            results["station_mqtt_per_s"] = drive_mqtt(broker, args.units, blobs)
            cpu1 = sum(ps.cpu_times()[:2])
            results["station_serial_per_s"] = drive_serial([x[0] for x in ptys], blobs)
            cpu2 = sum(ps.cpu_times()[:2])
            results["cpu_ms_per_capture_mqtt"] = (cpu1 - cpu0) * 1000 / len(blobs)
            results["cpu_ms_per_capture_serial"] = (cpu2 - cpu1) * 1000 / len(blobs)
            stop.set()
            results["rss_load_peak_mib"] = peak[0]
        finally:
            proc.terminate()
            proc.wait(30)
    ceiling = min(results["raw_sqlite_per_s"], results["raw_mqtt_per_s"])
    results["lower_ceiling_per_s"] = ceiling
    results["ratio_mqtt"] = results["station_mqtt_per_s"] / ceiling
    results["ratio_serial"] = results["station_serial_per_s"] / ceiling
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
