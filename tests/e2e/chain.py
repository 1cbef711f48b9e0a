"""The whole chain as separate processes: clouds, broker, station daemon, units, a battery.

Every process here is started by this module and stopped by its pid; every loop is bounded in
count and time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from agent.broker import PrivateBroker, free_port
from agent.capture import Capture
from agent.esp32.virtual import MqttUnitLink, PtySerialLink, VirtualUnit
from cloud.process import run_cli
from tests.e2e.netlink import CloudLink
from tests.linkproxy import LinkProxy

NAMES = ("aws", "azure", "gcp")
WEIGHTS = {"aws": 40, "azure": 30, "gcp": 30}
CLOUD_PORT = 8443  # inside a cloud's own namespace every port is free


# --- clouds ---------------------------------------------------------------------------------------


class CloudNode:
    """A `fieldstation-cloud serve` process (in its namespace when the link is real) behind a
    link proxy on loopback that can slow it down or fail its answers."""

    def __init__(self, name: str, data_dir: Path, link: CloudLink) -> None:
        self.name = name
        self.data_dir = data_dir
        self.link = link
        self.process: subprocess.Popen[bytes] | None = None
        self.port = CLOUD_PORT if link.real else 0
        self.proxy: LinkProxy | None = None
        self.admin = ""
        self.tokens: dict[str, str] = {}
        self.starts = 0

    @property
    def direct_url(self) -> str:
        return f"http://{self.link.cloud_addr}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.link.real:
            self.port = free_port()
        args = [*self.link.prefix(), sys.executable, "-m", "cloud", "serve"]
        args += [
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"{self.link.cloud_addr}:{self.port}",
        ]
        with (self.data_dir / "serve.log").open("ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cloud {self.name} exited: {self.log_tail()}")
            try:
                if requests.get(self.direct_url + "/v1/ping", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"cloud {self.name} did not answer: {self.log_tail()}")
        if self.proxy is None:
            self.proxy = LinkProxy(self.port, self.link.cloud_addr)
        else:
            self.proxy.retarget(self.port, self.link.cloud_addr)
        if not self.admin:
            self.admin = self.cli("admin-token", "--quiet").strip()

    def log_tail(self) -> str:
        return (self.data_dir / "serve.log").read_text(errors="replace")[-800:]

    def cli(self, *args: str) -> str:
        return run_cli(*args, data_dir=self.data_dir)

    def add_station(self, station_id: str) -> str:
        self.tokens[station_id] = self.cli("stations", "add", station_id, "--quiet").strip()
        return self.tokens[station_id]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 15 s); a paused process is woken first."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def pause(self) -> None:
        """A blackhole: the kernel still accepts connections, nothing ever answers."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        if self.proxy is not None:
            self.proxy.close()

    def _post(self, path: str, body: dict[str, Any], token: str) -> requests.Response:
        for _ in range(40):  # bounded: a rate-limited cloud answers 429 to the test too
            r = requests.post(
                self.direct_url + path,
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            if r.status_code != 429:
                return r
            time.sleep(float(r.headers.get("Retry-After", "1")))
        return r

    def lookup(self, station_id: str, ids: list[str]) -> dict[str, dict[str, str]]:
        """capture id -> what this cloud holds of it, asked as the station would."""
        held: dict[str, dict[str, str]] = {}
        for i in range(0, len(ids), 1000):
            r = self._post(
                "/v1/captures/lookup", {"capture_ids": ids[i : i + 1000]}, self.tokens[station_id]
            )
            r.raise_for_status()
            held.update(r.json()["held"])
        return held

    def records(self, station_id: str) -> list[dict[str, Any]]:
        """Every record this cloud keeps for the station (operator API, paged)."""
        out: list[dict[str, Any]] = []
        r = requests.get(
            self.direct_url + "/v1/captures",
            params={"station_id": station_id, "limit": 10000},
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=60,
        )
        r.raise_for_status()
        out.extend(r.json()["captures"])
        return out


def start_clouds(base: Path, links: dict[str, CloudLink], station_id: str) -> dict[str, CloudNode]:
    """The three clouds, started side by side, each knowing the station."""
    from concurrent.futures import ThreadPoolExecutor

    clouds = {name: CloudNode(name, base / name, link) for name, link in links.items()}

    def up(cloud: CloudNode) -> None:
        cloud.start()
        cloud.add_station(station_id)

    try:
        with ThreadPoolExecutor(len(clouds)) as pool:
            list(pool.map(up, clouds.values()))
    except Exception:
        for c in clouds.values():
            c.close()
        raise
    return clouds


# --- the station daemon ---------------------------------------------------------------------------


def station_toml(
    station_id: str,
    data_dir: Path,
    http_port: int,
    clouds: dict[str, CloudNode],
    *,
    serial_ports: Sequence[str] = (),
    broker_port: int | None = None,
    extra: str = "",
    upload: dict[str, Any] | None = None,
    read_timeout_s: float = 3.0,
) -> str:
    """The chaos station's config: fast retries and polls, so a few minutes see many cycles."""
    up = {
        "batch_max_items": 16,
        "retry_initial_s": 0.1,
        "retry_max_s": 2.0,
        "breaker_cooldown_s": 0.5,
        "breaker_cooldown_max_s": 2.0,
        "idle_poll_s": 0.2,
        "heartbeat_interval_s": 2.0,
        "empty_policy": "full",
        **(upload or {}),
    }
    lines = [
        f'[station]\nid = "{station_id}"\ndata_dir = "{data_dir}"\n',
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n',
        '[log]\nlevel = "info"\n',
        f"[serial]\nports = {json.dumps(list(serial_ports))}\nreopen_s = 0.3\n",
    ]
    if broker_port:
        lines.append(
            f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker_port}\n'
            "keepalive_s = 5\nreconnect_max_s = 1.0\n"
        )
    lines.append("[upload]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in up.items()]
    for name, cloud in clouds.items():
        assert cloud.proxy is not None
        lines += [
            "\n[[upload.endpoints]]",
            f'name = "{name}"',
            f'url = "{cloud.proxy.url}"',
            f"weight = {WEIGHTS[name]}",
            f'token = "{cloud.tokens[station_id]}"',
            "connect_timeout_s = 1.0",
            f"read_timeout_s = {read_timeout_s}",
        ]
    return "\n".join(lines) + "\n" + extra + "\n"


class StationProcess:
    """`fieldstation run` as a child process, so SIGKILL is a real crash."""

    def __init__(self, config: Path, http_port: int, log: Path) -> None:
        self.config = config
        self.base = f"http://127.0.0.1:{http_port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.kills = 0

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n=== run {self.runs + 1} ===\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.runs += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"station exited with {self.process.returncode}: {self.tail()}")
            try:
                if requests.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"station did not answer /healthz: {self.tail()}")

    def tail(self, n: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no checkpoint, whatever was in flight stays in flight."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.kills += 1

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def status(self) -> dict[str, Any] | None:
        try:
            r = requests.get(self.base + "/api/status", timeout=5)
            return r.json() if r.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None

    def metric(self, name: str, **labels: str) -> float | None:
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        key = f"{name}{{{want}}}" if want else name
        try:
            text = requests.get(self.base + "/metrics", timeout=5).text
        except requests.RequestException:
            return None
        for line in text.splitlines():
            if not line.startswith("#") and line.rpartition(" ")[0] == key:
                return float(line.rpartition(" ")[2])
        return None


# --- camera units ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the units saw: acknowledged capture ids (station format), tries, refusals."""

    acked: dict[str, str] = field(default_factory=dict)  # capture id -> unit
    sent: int = 0
    retries: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, capture_id: str, unit: str) -> None:
        with self.lock:
            self.acked[capture_id] = unit

    def refuse(self, why: str) -> None:
        with self.lock:
            self.retries += 1
            self.refused[why] = self.refused.get(why, 0) + 1


class UnitDriver:
    """One unit taking pictures at a steady rate and resending each until the station ACKs it,
    as the firmware does: a capture is forgotten only after its ACK."""

    def __init__(
        self,
        name: str,
        send: Callable[[bytes, int], str | None],
        images: Callable[[int], bytes],
        tally: Tally,
        *,
        interval_s: float,
        seed: int,
    ) -> None:
        self.name = name
        self._send = send
        self._images = images
        self.tally = tally
        self.interval_s = interval_s
        self.rnd = random.Random(seed)
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.idle = threading.Event()
        self.n = 0
        self.thread = threading.Thread(target=self._run, name=f"unit-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.paused.is_set():
                self.idle.set()
                self.stop.wait(0.1)
                continue
            self.idle.clear()
            self.n += 1
            jpeg = self._images(self.n)
            tries = 0
            while not self.stop.is_set() and tries < 2000:  # bounded; a drain ends long before
                tries += 1
                try:
                    capture_id = self._send(jpeg, self.n)
                except Exception as exc:  # link down, broker gone, station killed
                    capture_id = None
                    self.tally.refuse(type(exc).__name__)
                if capture_id:
                    self.tally.ack(capture_id, self.name)
                    break
                self.stop.wait(0.2 + self.rnd.random() * 0.3)
            with self.tally.lock:
                self.tally.sent += 1
            self.stop.wait(self.interval_s * (0.5 + self.rnd.random()))
        self.idle.set()


def protocol_sender(
    unit: VirtualUnit, path: str, tally: Tally
) -> Callable[[bytes, int], str | None]:
    """Send over the wire protocol; a failed try resends the same capture id."""

    def send(jpeg: bytes, n: int) -> str | None:
        unit.next_capture_id = n  # the firmware keeps the capture (and its id) until ACK
        res = unit.send_capture(jpeg)
        if not res.acked:
            tally.refuse(res.nak_reasons[-1] if res.nak_reasons else "no answer")
            return None
        return Capture(unit.unit_id, str(n), path, jpeg, 0.0).id  # type: ignore[arg-type]

    return send


def http_sender(base: str, device_id: str, tally: Tally) -> Callable[[bytes, int], str | None]:
    """A WildCAM-firmware unit posting to the intake; a retry posts the same photo again."""
    requests.post(
        f"{base}/api/cameras/register",
        json={"device_id": device_id, "name": "trail cam", "firmware_version": "3.1.0"},
        timeout=10,
    )

    def send(jpeg: bytes, n: int) -> str | None:
        r = requests.post(
            f"{base}/api/detections",
            files={
                "metadata": (None, json.dumps({"device_id": device_id, "timestamp": 5000 + n})),
                "image": (f"img{n}.jpg", jpeg, "image/jpeg"),
            },
            timeout=15,
        )
        if r.status_code in (200, 201):
            return str(r.json()["capture_id"])
        tally.refuse(f"HTTP {r.status_code}")
        return None

    return send


class Fleet:
    """Serial units on ptys, MQTT units on the broker, one HTTP unit: all driven at once."""

    def __init__(
        self,
        station_id: str,
        tally: Tally,
        images: Callable[[int], bytes],
        *,
        serial_units: int = 2,
        mqtt_units: int = 2,
    ) -> None:
        self.station_id = station_id
        self.tally = tally
        self.images = images
        self.mqtt_units = mqtt_units
        self.serial_links = [PtySerialLink() for _ in range(serial_units)]
        self.drivers: list[UnitDriver] = []
        self.units: list[VirtualUnit] = []

    @property
    def serial_ports(self) -> list[str]:
        return [link.slave_path for link in self.serial_links]

    def start(self, base: str, broker: PrivateBroker | None, interval_s: float, seed: int) -> None:
        senders: list[tuple[str, Callable[[bytes, int], str | None]]] = []
        for i, link in enumerate(self.serial_links):
            unit = VirtualUnit(f"e2e-serial-{i}", link, chunk_size=4096, ack_timeout_s=3.0)
            self.units.append(unit)
            senders.append((unit.unit_id, protocol_sender(unit, "serial", self.tally)))
        if broker is not None:
            for i in range(self.mqtt_units):
                uid = f"e2e-mqtt-{i}"
                mlink = MqttUnitLink(broker.host, broker.port, self.station_id, uid)
                mlink.client.reconnect_delay_set(1, 2)
                unit = VirtualUnit(uid, mlink, chunk_size=8192, ack_timeout_s=3.0)
                self.units.append(unit)
                senders.append((uid, protocol_sender(unit, "mqtt", self.tally)))
        senders.append(("c0ffee01", http_sender(base, "c0ffee01", self.tally)))
        for k, (name, send) in enumerate(senders):
            driver = UnitDriver(
                name,
                send,
                lambda n, k=k: self.images(k * 7 + n),
                self.tally,
                interval_s=interval_s,
                seed=seed + k,
            )
            self.drivers.append(driver)
        for unit in self.units:
            try:
                unit.hello()
            except Exception:  # the station may not be listening yet; HELLO is resent later
                pass
        for d in self.drivers:
            d.start()

    def pause(self, timeout: float = 30.0) -> None:
        """Stop taking new pictures; wait (bounded) until every capture in hand is acknowledged."""
        for d in self.drivers:
            d.paused.set()
        deadline = time.monotonic() + timeout
        for d in self.drivers:
            d.idle.wait(max(0.1, deadline - time.monotonic()))

    def resume(self) -> None:
        for d in self.drivers:
            d.paused.clear()

    def stop(self, timeout: float = 60.0) -> None:
        self.pause(timeout)
        for d in self.drivers:
            d.stop.set()
        for d in self.drivers:
            d.thread.join(10)
        for unit in self.units:
            try:
                unit.close()
            except Exception:
                pass


# --- the battery --------------------------------------------------------------------------------


class Battery:
    """`<root>/class/power_supply/BAT0` written as the kernel's driver would, following a curve."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "class" / "power_supply" / "BAT0"
        self.ac = root / "class" / "power_supply" / "AC"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ac.mkdir(parents=True, exist_ok=True)
        (self.dir / "type").write_text("Battery\n")
        (self.ac / "type").write_text("Mains\n")
        self.soc = 0.0
        self.charging = True
        self.set(80.0, charging=True)

    def set(self, soc: float, *, charging: bool) -> None:
        self.soc, self.charging = soc, charging
        amps = 0.8 if charging else -0.5
        (self.dir / "capacity").write_text(f"{round(soc)}\n")
        (self.dir / "voltage_now").write_text(f"{round((12.0 + 1.3 * soc / 100) * 1e6)}\n")
        (self.dir / "current_now").write_text(f"{round(amps * 1e6)}\n")
        (self.dir / "status").write_text(("Charging" if charging else "Discharging") + "\n")
        (self.ac / "online").write_text("1\n" if charging else "0\n")


def battery_curve(t: float) -> tuple[float, bool]:
    """State of charge and charging at `t` in 0..1 of the chaos phase: down through ECO by
    dusk, then the sun: back up above the ECO exit."""
    if t < 0.45:
        return 80.0 - (80.0 - 30.0) * t / 0.45, False
    return min(80.0, 30.0 + (80.0 - 30.0) * (t - 0.45) / 0.45), True


def broker_restart(broker: PrivateBroker) -> PrivateBroker:
    """SIGKILL the broker and start a fresh one on the same port (its sessions are gone)."""
    port = broker.port
    if broker.proc is not None and broker.proc.poll() is None:
        broker.proc.send_signal(signal.SIGKILL)
        broker.proc.wait(10)
    broker.stop()  # removes its temp folder
    deadline = time.monotonic() + 20
    while True:  # the old socket may linger a moment; bounded by the deadline
        try:
            return PrivateBroker(port).start()
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
