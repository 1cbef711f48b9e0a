"""The one place where the station is wired together and started (Frigate's app.py habit)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import __version__
from agent import protocol as p
from agent.config import Config
from agent.ingest.http import Intake
from agent.ingest.mqtt import MqttIngest
from agent.ingest.serial import SerialIngest, SerialLink
from agent.metrics import Metrics
from agent.sdnotify import notify, watchdog_interval
from agent.store import BUFFER_FILE, Store
from agent.supervisor import Supervisor
from agent.web import HttpListener, intake_app, main_app

log = logging.getLogger(__name__)


class Maintenance:
    """Enforces the buffer quota now and then."""

    name = "maintenance"

    def __init__(self, store: Store, interval_s: float) -> None:
        self.store = store
        self.interval_s = interval_s

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            self.store.evict()


class Station:
    """A field station: the buffer, its ingest paths, its local HTTP, under one supervisor."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.station_id = config.station_id
        self.data_dir = config.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics()
        self.store = Store(
            self.data_dir / BUFFER_FILE,
            quota_bytes=config.storage.quota_bytes,
            min_free_bytes=config.storage.min_free_bytes,
            check_on_start=config.storage.check_on_start,
            clock=clock,
        )
        self.metrics.watch_store(self.store)
        self.supervisor = Supervisor(self.metrics)
        self.started_at = time.time()
        self._unit_links: dict[str, Any] = {}
        self._stored_hooks: list[Callable[[str, str, bool], None]] = []
        self._analysed_hooks: list[Callable[[str, list], None]] = []
        self.serial_links: list[SerialLink] = []
        self.mqtt: MqttIngest | None = None
        self._build_workers()

    # --- wiring ---------------------------------------------------------------------------------

    def _build_workers(self) -> None:
        c = self.config
        for port in c.serial.ports:
            link = SerialLink(
                port,
                self.store,
                self.metrics,
                c.ingest,
                baudrate=c.serial.baudrate,
                reopen_s=c.serial.reopen_s,
                on_unit=self._unit_seen,
                on_stored=self._stored,
            )
            self.serial_links.append(link)
            self.supervisor.add(SerialIngest(link))
        if c.mqtt.enabled:
            self.mqtt = MqttIngest(
                c.mqtt,
                self.station_id,
                self.store,
                self.metrics,
                c.ingest,
                on_unit=self._unit_seen,
                on_stored=self._stored,
            )
            self.supervisor.add(self.mqtt)
        intake = Intake(
            self.store,
            self.metrics,
            token=self._intake_token(),
            max_body_bytes=c.http.max_body_bytes,
            max_capture_bytes=c.ingest.max_capture_bytes,
            on_stored=self._stored,
        )
        self.http = HttpListener(
            "http",
            main_app(intake, self.metrics, self.status, self.ready, self.send_command),
            c.http.listen,
        )
        self.supervisor.add(self.http)
        if c.http.lan_listen:
            self.supervisor.add(HttpListener("http-lan", intake_app(intake), c.http.lan_listen))
        self.supervisor.add(Maintenance(self.store, c.storage.evict_interval_s))
        self.inference = None
        if c.inference.enabled:
            from agent.inference.worker import InferenceWorker

            self.inference = InferenceWorker(self.store, c, self.metrics, on_result=self._analysed)
            self.supervisor.add(self.inference)
        self.uploader = None
        if c.upload.enabled and c.upload.endpoints:
            from agent.upload.worker import Uploader

            self.uploader = Uploader(
                self.store, c, self.metrics, heartbeat_extra=self._heartbeat_extra
            )
            self.supervisor.add(self.uploader)

    def _heartbeat_extra(self) -> dict[str, Any]:
        """What the uploader's heartbeats say beyond the queue: the models running here."""
        models: dict[str, str] = {}
        if self.inference is not None:
            for ref in self.inference.status()["models"]:  # "name@version"
                name, _, version = ref.rpartition("@")
                models[name] = version
        return {"models": models}

    def _intake_token(self) -> str:
        h = self.config.http
        if h.token_file:
            return Path(h.token_file).read_text().strip()
        return h.token

    def add_worker(self, worker: Any) -> None:
        """Add a worker before start (inference, upload, power: each brings its own)."""
        self.supervisor.add(worker)

    def on_stored(self, hook: Callable[[str, str, bool], None]) -> None:
        """Call `hook(unit_id, capture_id, duplicate)` after each capture was stored and ACKed."""
        self._stored_hooks.append(hook)

    def _stored(self, unit_id: str, capture_id: str, duplicate: bool) -> None:
        for hook in self._stored_hooks:
            try:
                hook(unit_id, capture_id, duplicate)
            except Exception:
                log.exception("capture hook failed")

    def on_analysed(self, hook: Callable[[str, list], None]) -> None:
        """Call `hook(capture_id, detections)` after each capture's analysis was committed."""
        self._analysed_hooks.append(hook)

    def _analysed(self, capture_id: str, detections: list) -> None:
        for hook in self._analysed_hooks:
            try:
                hook(capture_id, detections)
            except Exception:
                log.exception("analysis hook failed")

    def _unit_seen(self, unit_id: str, link: Any) -> None:
        self._unit_links[unit_id] = link

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.store.evict()
        self.supervisor.start()
        if not self.http.wait_started(15):
            raise RuntimeError(f"HTTP listener did not start on {self.config.http.listen}")
        log.info(
            "station %s running: buffer %s, http %s, serial %s, mqtt %s",
            self.station_id,
            self.store.path,
            self.config.http.listen,
            ", ".join(self.config.serial.ports) or "none",
            f"{self.config.mqtt.host}:{self.config.mqtt.port}" if self.mqtt else "off",
        )

    def stop(self) -> None:
        self.supervisor.stop()
        self.store.close()

    def ready(self) -> tuple[bool, str]:
        down = [w["name"] for w in self.supervisor.status() if not w["running"]]
        if down:
            return False, "workers down: " + ", ".join(down)
        return True, ""

    # --- what operators see ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "station_id": self.station_id,
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 1),
            "data_dir": str(self.data_dir),
            "buffer": str(self.store.path),
            "workers": self.supervisor.status(),
            "links": {
                **{link.name: link.is_open for link in self.serial_links},
                **({"mqtt": self.mqtt.connected.is_set()} if self.mqtt else {}),
            },
            "queue": self.store.queue_summary(),
            "inference": self.inference.status() if self.inference else None,
            "upload": self.uploader.status() if self.uploader else None,
            "alarms": self.store.alarms(),
            "units": [dict(u) for u in self.store.units()],
        }

    # --- commands to units ----------------------------------------------------------------------

    def send_command(self, unit_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send CONFIG, CAPTURE_NOW or SLEEP_NOW to a unit on whichever link it was last seen."""
        link = self._unit_links.get(unit_id)
        if link is None:
            raise LookupError(f"unit {unit_id!r} has not been seen on serial or MQTT")
        kind = body.get("command")
        if kind == "config":
            fields = {k: v for k, v in body.items() if k != "command"}
            fields.setdefault("station_time_ms", int(time.time() * 1000))
            msg: p.Message = p.Config(**fields)
            msg.validate()
            msg.encode_payload()  # range errors surface here, as ValueError
        elif kind == "capture_now":
            msg = p.CaptureNow(int(body.get("request_id", 0)))
        elif kind == "sleep_now":
            msg = p.SleepNow(int(body.get("duration_s", 0)))
        else:
            raise ValueError(f"command {kind!r} is not config, capture_now or sleep_now")
        if isinstance(link, MqttIngest):
            link.send(unit_id, msg)
        else:
            link.send(msg)
        log.info("sent %s to unit %s", msg.TYPE.name, unit_id)
        return {"sent": msg.TYPE.name, "unit_id": unit_id}


def run_daemon(config: Config) -> int:
    """`fieldstation run`: start, tell systemd, feed the watchdog while healthy, drain on SIGTERM."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s; draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    station = Station(config)
    try:
        station.start()
    except Exception:
        station.stop()
        raise
    notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=running")
    interval = watchdog_interval()
    tick = min(interval, 10.0) if interval else 10.0
    last_status = ""
    while not stop.wait(tick):
        healthy = station.supervisor.healthy()
        if interval and healthy:
            notify("WATCHDOG=1")
        q = station.store.queue_summary()
        text = (
            f"STATUS={'running' if healthy else 'degraded'}; {q['pending']} captures pending, "
            f"{q['by_state']['uploaded']['count']} uploaded"
        )
        if text != last_status:
            notify(text)
            last_status = text
    notify("STOPPING=1")
    station.stop()
    log.info("station stopped cleanly")
    return 0
