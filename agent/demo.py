"""`fieldstation demo`: the whole chain on one machine, no hardware.

Virtual camera units send real JPEGs over a pseudo-terminal (serial protocol), over MQTT when a
`mosquitto` binary is on PATH (started privately on a free loopback port), and over the WildCAM
HTTP intake; the station stores each durably before acknowledging it. Live progress, then a summary.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import requests

from agent.broker import PrivateBroker, free_port
from agent.capture import Capture, IngestPath
from agent.config import parse_config
from agent.daemon import Station
from agent.esp32.units import virtual_unit
from agent.esp32.virtual import MqttUnitLink, PtySerialLink, VirtualUnit
from agent.scenes import scene_jpeg

if TYPE_CHECKING:
    from cloud.process import CloudService

STATION_ID = "demo-station"
Say = Callable[[str], None]
# a tiny detector trained for agent/scenes.py frames (models/make_fixtures.py), shipped in the repo
DEMO_MODEL = Path(__file__).resolve().parents[1] / "models" / "fixtures" / "scene-animal"


class _Progress:
    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.done = 0
        self.lock = threading.Lock()
        self._writing = threading.Lock()
        self.stream = stream  # stderr under --json: stdout carries only the JSON document

    def line(self, text: str) -> None:
        # whole lines: the inference worker's "analysed" lines come from another thread, and
        # print() writes the text and its newline apart, so two lines could share one
        with self._writing:
            self.stream.write(text + "\n")
            self.stream.flush()

    def stored(
        self, path: str, unit: str, capture_id: str, size: int, ms: float, outcome: str
    ) -> None:
        with self.lock:
            self.done += 1
            self.line(
                f"  [{self.done:>3}/{self.total}] {path:<6} {unit:<14} {size / 1024:6.1f} KiB "
                f"{outcome:<9} {ms:6.1f} ms  {capture_id}"
            )


def run_demo(captures: int = 12, as_json: bool = False, keep: bool = False) -> int:
    captures = max(1, captures)
    workdir = Path(tempfile.mkdtemp(prefix="fieldstation-demo-"))
    progress = _Progress(captures, sys.stderr if as_json else sys.stdout)
    say = progress.line
    broker: PrivateBroker | None = None
    if shutil.which("mosquitto"):
        try:
            broker = PrivateBroker().start()
        except (OSError, RuntimeError) as exc:
            say(f"mqtt: private broker did not start ({exc}); continuing with serial and HTTP")
            broker = None
    cloud = _start_cloud(workdir / "cloud", say)
    upload_toml = ""
    if cloud is not None:
        token = cloud.add_station(STATION_ID)
        upload_toml = (
            f'[[upload.endpoints]]\nname = "local"\nurl = "{cloud.url}"\ntoken = "{token}"\n'
            "[upload]\nidle_poll_s = 0.2\n"
        )
    serial_link = PtySerialLink()
    http_port = free_port()
    detector = DEMO_MODEL if DEMO_MODEL.exists() else None
    inference_toml = (
        f'[inference]\ndetector = "{detector}"\nthreads = 1\n'
        if detector
        else "[inference]\nenabled = false\n"
    )
    mqtt_toml = (
        f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n' if broker else ""
    )
    config = parse_config(
        f"""
[station]
id = "{STATION_ID}"
data_dir = "{workdir / "station"}"

[serial]
ports = ["{serial_link.slave_path}"]
reopen_s = 0.5

[http]
listen = "127.0.0.1:{http_port}"

[storage]
check_on_start = false
{inference_toml}
{mqtt_toml}
{upload_toml}""",
        "<demo>",
    )
    say("WildCAM field station demo")
    say(f"  data folder   {workdir} ({'kept' if keep else 'deleted at exit; --keep keeps it'})")
    say(f"  serial        virtual unit on pseudo-terminal {serial_link.slave_path}")
    mqtt_line = f"private mosquitto on 127.0.0.1:{broker.port}" if broker else "off (no mosquitto)"
    say(f"  mqtt          {mqtt_line}")
    say(f"  http intake   http://127.0.0.1:{http_port}/api/detections")
    say(
        f"  inference     {detector.name + ' (LiteRT)' if detector else 'off (model folder not found)'}"
    )
    say(f"  cloud         {'fieldstation-cloud serve on ' + cloud.url if cloud else 'off'}")
    station = Station(config)
    analysed: dict[str, list] = {}
    analysed_event = threading.Condition()

    def on_analysed(capture_id: str, detections: list) -> None:
        with analysed_event:
            analysed[capture_id] = detections
            analysed_event.notify_all()
        found = ", ".join(f"{d.label} {d.score:.2f}" for d in detections) or "empty frame"
        say(f"        analysed {capture_id}: {found}")

    station.on_analysed(on_analysed)
    station.start()
    units: dict[str, VirtualUnit] = {}
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        units["serial"] = virtual_unit("demo-serial-1", serial_link, chunk_size=4096)
        if broker:
            mlink = MqttUnitLink(broker.host, broker.port, STATION_ID, "demo-mqtt-1")
            units["mqtt"] = virtual_unit("demo-mqtt-1", mlink, chunk_size=8192, chip="esp32")
        for unit in units.values():
            _wait_link(station, unit)
            unit.hello()
            unit.telemetry(battery_mv=3950, temperature_c=18.5)
        http_unit = "a0b1c2d3e4f5"
        base = f"http://127.0.0.1:{http_port}"
        requests.post(
            f"{base}/api/cameras/register",
            json={
                "device_id": http_unit,
                "name": "Trail cam 3",
                "location_name": "north ridge",
                "firmware_version": "3.1.0",
            },
            timeout=10,
        ).raise_for_status()
        requests.post(
            f"{base}/api/cameras/{http_unit}/status",
            json={"battery_level": 87, "battery_voltage": 3.98, "temperature": 17.0},
            timeout=10,
        ).raise_for_status()
        say(f"\nsending {captures} captures (real JPEGs, ~48 KiB each):")
        paths: list[IngestPath] = ["serial", "mqtt", "http"] if broker else ["serial", "http"]
        for i in range(captures):
            path = paths[i % len(paths)]
            jpeg = scene_jpeg(i)
            t0 = time.perf_counter()
            if path == "http":
                r = requests.post(
                    f"{base}/api/detections",
                    data={  # a plain form field, sent before the file part
                        "metadata": json.dumps(
                            {"device_id": http_unit, "timestamp": int(time.time())}
                        )
                    },
                    files={"image": ("capture.jpg", jpeg, "image/jpeg")},
                    timeout=30,
                )
                ok = r.status_code in (200, 201)
                capture_id = r.json().get("capture_id", "-") if ok else "-"
                outcome = r.json().get("status", "?") if ok else f"HTTP {r.status_code}"
                unit_name = http_unit
            else:
                unit = units[path]
                res = unit.send_capture(jpeg)
                ok = res.acked
                outcome = ("duplicate" if res.duplicate else "acked") if ok else "not acked"
                # the id the station gave it, built the one way ids are built
                capture_id = Capture(unit.unit_id, str(res.capture_id), path, jpeg, 0.0).id
                unit_name = unit.unit_id
            ms = (time.perf_counter() - t0) * 1000
            progress.stored(path, unit_name, capture_id, len(jpeg), ms, outcome)
            time.sleep(0.1)  # a camera network trickles; let analysis and upload show as they go
            results.append({"path": path, "unit": unit_name, "ok": ok, "bytes": len(jpeg)})
        if station.inference is not None and detector:
            with analysed_event:
                analysed_event.wait_for(
                    lambda: station.store.queue_summary()["by_state"]["received"]["count"] == 0,
                    timeout=60,
                )
        if station.uploader is not None:
            _wait_uploaded(station, len(results), say)
        elapsed = time.monotonic() - started
        summary = _summary(station, results, elapsed, workdir, broker is not None)
        summary["cloud"] = _cloud_summary(cloud) if cloud else None
        if cloud:
            summary["all_uploaded"] = summary["cloud"]["captures"] == len(results)
            summary["all_stored"] = summary["all_stored"] and summary["all_uploaded"]
        _print_summary(summary, say, keep=keep)
        if as_json:
            print(json.dumps(summary, indent=2, default=str))
        return 0 if summary["all_stored"] else 1
    finally:
        station.stop()
        for unit in units.values():
            unit.close()
        if broker:
            broker.stop()
        if cloud:
            cloud.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", file=sys.stderr)


def _start_cloud(folder: Path, say: Say) -> CloudService | None:
    """A local `fieldstation-cloud serve`, the demo's sync endpoint."""
    try:
        from cloud.process import CloudService  # the cloud's imports are only paid when it runs

        return CloudService.start(folder)
    except Exception as exc:  # the demo still shows ingest and inference without it
        say(f"cloud: local sync endpoint did not start ({exc}); uploads are off")
        return None


def _wait_uploaded(station: Station, total: int, say: Say, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    shown = -1
    while time.monotonic() < deadline:
        uploaded = station.store.queue_summary()["by_state"]["uploaded"]["count"]
        if uploaded != shown:
            say(f"  uploaded {uploaded}/{total} to the cloud")
            shown = uploaded
        if uploaded >= total:
            return
        time.sleep(0.2)


def _cloud_summary(cloud: CloudService) -> dict[str, Any]:
    """What reached the cloud, asked of the cloud itself (operator API)."""
    admin = cloud.admin_token()
    r = requests.get(
        f"{cloud.url}/v1/captures",
        params={"station_id": STATION_ID, "limit": "1000"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )
    r.raise_for_status()
    captures = r.json()["captures"]
    variants = Counter(c.get("variant", "?") for c in captures)
    return {"url": cloud.url, "captures": len(captures), "variants": dict(variants)}


def _wait_link(station: Station, unit: VirtualUnit, timeout: float = 15) -> None:
    """Wait until the station has the unit's port open or is subscribed to its broker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if isinstance(unit.link, PtySerialLink):
            if any(link.is_open for link in station.serial_links):
                return
        elif station.mqtt and station.mqtt.connected.is_set():
            return
        time.sleep(0.05)
    raise RuntimeError(f"station did not open the link for {unit.unit_id}")


def _summary(
    station: Station, results: list[dict[str, Any]], elapsed: float, workdir: Path, mqtt: bool
) -> dict[str, Any]:
    q = station.store.queue_summary()
    sent = Counter(r["path"] for r in results)
    ok = Counter(r["path"] for r in results if r["ok"])
    stored_rows = station.store.count_by_path()
    return {
        "station_id": station.station_id,
        "captures_sent": len(results),
        "captures_acknowledged": sum(ok.values()),
        "all_stored": sum(ok.values()) == len(results)
        and sum(stored_rows.values()) == len(results),
        "by_path": {
            path: {
                "sent": sent[path],
                "acknowledged": ok[path],
                "in_buffer": stored_rows.get(path, 0),
            }
            for path in sorted(sent)
        },
        "mqtt": mqtt,
        "queue": q["by_state"],
        "stored_image_bytes": q["stored_image_bytes"],
        "units": [u["unit_id"] for u in station.store.units()],
        "detections": _detection_counts(station),
        "buffer": str(station.store.path),
        "elapsed_s": round(elapsed, 2),
    }


def _detection_counts(station: Station) -> dict[str, int]:
    out = station.store.count_by_label()
    out["empty frames"] = station.store.count_empty()
    return out


def _print_summary(s: dict[str, Any], say: Say, *, keep: bool) -> None:
    say("\nsummary")
    say(
        f"  captures      {s['captures_acknowledged']}/{s['captures_sent']} acknowledged after a durable commit"
    )
    for path, v in s["by_path"].items():
        say(
            f"    {path:<8} sent {v['sent']:>3}  acknowledged {v['acknowledged']:>3}  in buffer {v['in_buffer']:>3}"
        )
    where = s["buffer"] if keep else "the data folder (deleted at exit; --keep keeps it)"
    say(f"  buffer        {s['stored_image_bytes'] / 1024:.0f} KiB of JPEGs in {where}")
    states = ", ".join(f"{k} {v['count']}" for k, v in s["queue"].items() if v["count"])
    say(f"  by state      {states}")
    say(f"  units         {', '.join(s['units'])}")
    say("  detections    " + ", ".join(f"{k} {v}" for k, v in s["detections"].items()))
    if s.get("cloud"):
        c = s["cloud"]
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(c["variants"].items()))
        say(f"  in the cloud  {c['captures']} captures at {c['url']} ({kinds})")
    say(f"  elapsed       {s['elapsed_s']} s")
    say(
        "  result        "
        + (
            ("every capture stored and uploaded" if s.get("cloud") else "every capture stored")
            if s["all_stored"]
            else "SOME CAPTURES MISSING"
        )
    )
