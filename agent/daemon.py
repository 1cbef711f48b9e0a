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
from agent.bufferlock import BufferInUse, BufferLock
from agent.config import ComponentConfigError, Config, read_secret
from agent.health import Alarm, Health
from agent.ingest.http import Intake
from agent.ingest.mqtt import MqttIngest
from agent.ingest.serial import SerialIngest, SerialLink
from agent.metrics import Metrics
from agent.modelsync import versions  # noqa: F401  # registers model sync's table before the store opens
from agent.power.api import power_routes
from agent.power.worker import PowerState, PowerWorker  # also registers the power tables
from agent.salvage import recover_set_aside
from agent.sdnotify import notify, watchdog_interval
from agent.store import BUFFER_FILE, Store, StoreError
from agent.supervisor import Supervisor, Worker
from agent.upload import ledger  # noqa: F401  # registers the upload tables before the store opens
from agent.upload.heartbeat import Heartbeat
from agent.web import HttpListener, intake_app, main_app
from agent.web.page import StationPage

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
        # before the store: recovery must never move a file another station has open
        self.lock = BufferLock(self.data_dir)
        self.lock.acquire()
        try:
            self.store = Store(
                self.data_dir / BUFFER_FILE,
                quota_bytes=config.storage.quota_bytes,
                min_free_bytes=config.storage.min_free_bytes,
                check_on_start=config.storage.check_on_start,
                clock=clock,
                reserve_bytes=config.storage.reserve_bytes,
            )
        except BaseException:
            self.lock.release()
            raise
        if self.store.set_aside is not None:  # a damaged buffer: its captures come back, once
            recover_set_aside(self.store)
        self.metrics.watch_store(self.store)
        # what the heartbeats say; components add their part with self.heartbeat.add(name, fn)
        self.heartbeat = Heartbeat(self.store, self.station_id)
        self.heartbeat.add("models", self._heartbeat_models)
        self.supervisor = Supervisor(self.metrics)
        self.started_at = time.time()
        self._unit_links: dict[str, SerialLink | MqttIngest] = {}
        self._stored_hooks: list[Callable[[str, str, bool], None]] = []
        self._analysed_hooks: list[Callable[[str, list], None]] = []
        self.serial_links: list[SerialLink] = []
        self.mqtt: MqttIngest | None = None
        self._build_workers()
        self.health = self._watch_health()

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
                unit_config=self._wanted_unit_config,
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
                unit_config=self._wanted_unit_config,
            )
            self.supervisor.add(self.mqtt)
        # the technician's page: built before the listeners that serve it
        self.page = StationPage(self) if c.web.enabled else None
        intake = Intake(
            self.store,
            self.metrics,
            token=self._intake_token(),
            max_body_bytes=c.http.max_body_bytes,
            max_capture_bytes=c.ingest.max_capture_bytes,
            unit_clock_skew_s=c.ingest.unit_clock_skew_s,
            on_stored=self._stored,
        )
        self.http = HttpListener(
            "http",
            main_app(
                intake,
                self.metrics,
                self.status,
                self.ready,
                self.send_command,
                extra_routes=[
                    *power_routes(lambda: self.power),
                    *(self.page.routes() if self.page else ()),
                ],
            ),
            c.http.listen,
        )
        self.supervisor.add(self.http)
        if c.http.lan_listen:
            lan_page = self.page.routes(lan=True) if self.page and c.web.lan else ()
            self.supervisor.add(
                HttpListener("http-lan", intake_app(intake, lan_page), c.http.lan_listen)
            )
        self.supervisor.add(Maintenance(self.store, c.storage.evict_interval_s))
        self.inference = None
        if c.inference.enabled:
            from agent.inference.worker import InferenceWorker

            self.inference = InferenceWorker(self.store, c, self.metrics, on_result=self._analysed)
            self.supervisor.add(self.inference)
        self.uploader = None
        if c.upload.enabled and c.upload.endpoints:
            from agent.upload.worker import Uploader

            self.uploader = Uploader(self.store, c, self.metrics, heartbeat=self.heartbeat)
            self.supervisor.add(self.uploader)
        self.on_stored(self._ring_for_stored)
        self.on_analysed(self._ring_for_analysed)
        self.modelsync = None
        if c.modelsync.enabled:
            from agent.modelsync.worker import ModelSync

            # built after inference: it points the inference worker at the active version
            sync = ModelSync(self.store, c, inference=self.inference)
            self.heartbeat.add("modelsync", lambda: {"modelsync": sync.report()})
            self.supervisor.add(sync)
            self.modelsync = sync
        self.power: PowerWorker | None = None
        if c.power.enabled:
            # last: it steers the workers above through their seams, and units through commands
            self.power = PowerWorker(
                c.power,
                self.store,
                self.metrics,
                send_command=self._send_to_unit,
                checkpoint=self.store.checkpoint,
            )
            self.heartbeat.add("power", self.power.heartbeat)
            self.on_stored(self.power.capture_stored)
            if self.modelsync is not None:
                self.modelsync.power_check = self._power_allows
            self.power.subscribe(self._follow_power)
            self.supervisor.add(self.power)

    def _watch_health(self) -> Health:
        """Every part that can be unwell, as one list of alarms (status, /readyz, /metrics)."""
        health = Health()
        health.add("workers", self._worker_alarms)
        for link in self.serial_links:
            health.add(link.name, link.alarms)
        if self.mqtt is not None:
            health.add("mqtt", self.mqtt.alarms)
        if self.inference is not None:
            health.add("inference", self.inference.alarms)
        if self.uploader is not None:
            health.add("upload", self.uploader.chooser.alarms)
        self.metrics.registry.register(health.collector())
        return health

    def _worker_alarms(self) -> list[Alarm]:
        return [
            Alarm("worker", w["name"], f"crashed ({w['last_error']}); restarting with backoff")
            for w in self.supervisor.status()
            if not w["running"]
        ]

    def _follow_power(self, st: PowerState) -> None:
        """A new power state: inference mode and uploads follow its policy."""
        d = st.decisions
        if self.inference is not None:
            self.inference.set_power_mode(d.inference)
        if self.uploader is not None:
            if d.uploads_allowed:
                self.uploader.resume()
            else:
                self.uploader.pause(f"power {st.state.value.upper()}: uploads {d.uploads_reason}")

    def _power_allows(self, what: str) -> bool:
        """Model sync asks before a download or an activation: only NORMAL and charging."""
        return self.power is None or self.power.current.decisions.downloads_allowed

    def _heartbeat_models(self) -> dict[str, Any]:
        """The heartbeat's `models`: the models running here."""
        models: dict[str, str] = {}
        if self.inference is not None:
            for ref in self.inference.status()["models"]:  # "name@version"
                name, _, version = ref.rpartition("@")
                models[name] = version
        return {"models": models}

    def _intake_token(self) -> str:
        h = self.config.http
        if h.token_file:
            return read_secret(h.token_file, "http.token_file")
        return h.token

    def add_worker(self, worker: Worker) -> None:
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

    def _ring_for_stored(self, unit_id: str, capture_id: str, duplicate: bool) -> None:
        """A new capture is the inference worker's at once, or the uploader's when captures
        go unanalysed."""
        if duplicate:
            return
        if self.inference is not None:
            self.inference.doorbell.ring()
        if self.uploader is not None and "received" in self.uploader.states:
            self.uploader.captures_ready()

    def _ring_for_analysed(self, capture_id: str, detections: list) -> None:
        if self.uploader is not None:
            self.uploader.captures_ready()

    def _wanted_unit_config(self, unit_id: str) -> dict[str, int]:
        """The CONFIG fields the station asks of a unit: the power manager's, when it sets them."""
        power = getattr(self, "power", None)  # ingest may hear a unit before power is built
        if power is None or not power.manages_units:
            return {}
        return power.unit_config(unit_id)

    def _unit_seen(self, unit_id: str, link: SerialLink | MqttIngest) -> None:
        self._unit_links[unit_id] = link
        if self.power is not None:
            # a waking unit gets the power state's CONFIG
            self.power.unit_seen(unit_id, "mqtt" if isinstance(link, MqttIngest) else "serial")

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.store.evict()
        self.supervisor.start()
        if not self.http.wait_started(15):
            raise RuntimeError(f"http.listen: cannot listen on {self.config.http.listen}")
        log.info(
            "station %s running: buffer %s, http %s, serial %s, mqtt %s",
            self.station_id,
            self.store.path,
            self.config.http.listen,
            ", ".join(self.config.serial.ports) or "none",
            f"{self.config.mqtt.host}:{self.config.mqtt.port}" if self.mqtt else "off",
        )
        c = self.config
        if c.inference.enabled and not c.inference.detector and self.modelsync is None:
            log.warning(
                "no detector configured ([inference] detector): captures are passed on unanalysed"
            )
        if self.uploader is None:
            log.warning(
                "no upload endpoint ([[upload.endpoints]]): captures stay in the buffer, "
                "up to storage.quota_bytes"
            )

    def stop(self) -> None:
        self.supervisor.stop()
        if self.power is not None:
            self.power.close()
        self.store.close()
        self.lock.release()

    def ready(self) -> tuple[bool, str]:
        """Ready while nothing is unwell; otherwise what is not, in words (for /readyz)."""
        return self.health.ready()

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
            "modelsync": self.modelsync.status() if self.modelsync else None,
            "power": self.power.status() if self.power else None,
            "alarms": self.store.alarms(),
            "health": [a.as_dict() for a in self.health.alarms()],
            "units": [dict(u) for u in self.store.units()],
        }

    # --- commands to units ----------------------------------------------------------------------

    def unit_link(self, unit_id: str) -> str | None:
        """'serial' or 'mqtt' when commands can reach the unit, else None (HTTP-only, not seen)."""
        link = self._unit_links.get(unit_id)
        if link is None:
            return None
        return "mqtt" if isinstance(link, MqttIngest) else "serial"

    def send_command(self, unit_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A technician's command (API, page, `fieldstation units command`) to a unit.

        Where the power manager sets the units' CONFIG, a technician's CONFIG goes through it: its
        keys win until the power state changes (agent/power/policy.py has the rule)."""
        power = self.power
        if body.get("command") == "config" and power is not None and power.manages_units:
            return power.technician_config(unit_id, body, self._send_to_unit)
        return self._send_to_unit(unit_id, body)

    def _send_to_unit(self, unit_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send CONFIG, CAPTURE_NOW or SLEEP_NOW to a unit on whichever link it was last seen."""
        link = self._unit_links.get(unit_id)
        if link is None:
            raise LookupError(f"unit {unit_id!r} has not been seen on serial or MQTT")
        kind = body.get("command")
        retain = False
        if kind == "config":
            fields = {k: v for k, v in body.items() if k not in ("command", "retain")}
            # MQTT: kept at the broker for a unit that subscribes later (the power manager's)
            retain = bool(body.get("retain", False))
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
            link.send(unit_id, msg, retain=retain)
        else:
            link.send(msg)
        log.info("sent %s to unit %s", msg.TYPE.name, unit_id)
        return {"sent": msg.TYPE.name, "unit_id": unit_id}


class ActivitySummary:
    """The periodic one-line "what the station did" log line."""

    def __init__(self, store: Store, interval_s: float, clock: Callable[[], float] = time.time):
        self.store = store
        self.interval_s = interval_s
        self.clock = clock
        self.since = clock()
        self.analysed = 0  # counted as analyses commit: the state moves on before we look

    def count_analysed(self, capture_id: str, detections: list) -> None:
        self.analysed += 1

    def maybe_log(self) -> None:
        now = self.clock()
        if not self.interval_s or now - self.since < self.interval_s:
            return
        done = self.store.activity_since(self.since)
        pending = self.store.queue_summary()["pending"]
        log.info(
            "last %.0f min: stored %d, analysed %d, uploaded %d, failed %d; %d pending",
            (now - self.since) / 60,
            done["received"],
            self.analysed,
            done["uploaded"],
            done["failed"],
            pending,
        )
        self.since = now
        self.analysed = 0


class StartupError(RuntimeError):
    """The station could not start; the message names the key or the part that refused."""


def _start(config: Config) -> Station:
    """A started station, or StartupError saying in one line what stopped it."""
    try:
        station = Station(config)
    except (BufferInUse, StoreError, ComponentConfigError) as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:
        where = str(exc.filename or "")
        if not where or Path(where).is_relative_to(config.data_dir):
            raise StartupError(
                f"station.data_dir: {config.data_dir}: {exc.strerror or exc}"
            ) from None
        raise StartupError(f"{where}: {exc.strerror or exc}") from None
    except Exception as exc:  # any other refusal still ends as one line (the trace at debug)
        log.debug("start-up failed", exc_info=True)
        raise StartupError(f"{type(exc).__name__}: {exc}") from None
    try:
        station.start()
    except Exception as exc:
        log.debug("start-up failed", exc_info=True)
        station.stop()
        raise StartupError(str(exc)) from None
    return station


def run_daemon(config: Config) -> int:
    """`fieldstation run`: start, tell systemd, feed the watchdog while healthy, drain on SIGTERM."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s; draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    station = _start(config)
    notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=running")
    interval = watchdog_interval()
    tick = min(interval, 10.0) if interval else 10.0
    last_status = ""
    summary = ActivitySummary(station.store, config.log.summary_interval_s)
    station.on_analysed(summary.count_analysed)
    while not stop.wait(tick):
        summary.maybe_log()
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
