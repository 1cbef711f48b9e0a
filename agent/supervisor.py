"""Runs the station's workers as threads and restarts the ones that crash, with backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypedDict

from agent.doorbell import Doorbell
from agent.metrics import Metrics

log = logging.getLogger(__name__)

MONITOR_IDLE_S = 600.0  # with every worker running the monitor has nothing to do; a long nap


class WorkerStatus(TypedDict):
    name: str
    running: bool
    restarts: int
    last_error: str | None


class Worker(Protocol):
    """A long-lived part of the station. `run` returns when `stop` is set; raising is a crash."""

    name: str

    def run(self, stop: threading.Event) -> None: ...


@dataclass
class _Slot:
    worker: Worker
    thread: threading.Thread | None = None
    restarts: int = 0
    running: bool = False
    last_error: str | None = None
    next_start: float = 0.0
    started_at: float = field(default_factory=time.monotonic)


class Supervisor:
    """Starts every worker, restarts crashed ones (1 s, 2 s, 4 s … capped), reports health."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        stable_after_s: float = 120.0,
    ) -> None:
        self.metrics = metrics
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stable_after_s = stable_after_s
        self.stop_event = threading.Event()
        self._ended = threading.Event()  # a worker ended, or the station stops: the monitor looks
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self.on_change: Callable[[], None] | None = None

    def add(self, worker: Worker) -> None:
        if worker.name in self._slots:
            raise ValueError(f"two workers named {worker.name!r}")
        self._slots[worker.name] = _Slot(worker)

    def start(self) -> None:
        for slot in self._slots.values():
            self._start(slot)
        self._monitor = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._monitor.start()

    def _start(self, slot: _Slot) -> None:
        slot.running = True
        slot.started_at = time.monotonic()
        self.metrics.worker_up.labels(slot.worker.name).set(1)
        slot.thread = threading.Thread(
            target=self._run, args=(slot,), name=slot.worker.name, daemon=True
        )
        slot.thread.start()

    def _run(self, slot: _Slot) -> None:
        try:
            slot.worker.run(self.stop_event)
            if not self.stop_event.is_set():
                raise RuntimeError("returned while the station was running")
        except Exception as exc:
            if self.stop_event.is_set():
                return
            # a worker that ran stably for a while starts its backoff afresh
            if time.monotonic() - slot.started_at > self.stable_after_s:
                slot.restarts = 0
            delay = min(self.backoff_max_s, self.backoff_initial_s * 2**slot.restarts)
            slot.restarts += 1
            slot.last_error = f"{type(exc).__name__}: {exc}"
            slot.next_start = time.monotonic() + delay
            self.metrics.worker_restarts.labels(slot.worker.name).inc()
            self.metrics.worker_up.labels(slot.worker.name).set(0)
            log.exception(
                "worker %s crashed (%s); restarting in %.0f s", slot.worker.name, exc, delay
            )
        finally:
            slot.running = False
            self._ended.set()
            if self.on_change:
                self.on_change()

    def _watch(self) -> None:
        # asleep until a worker ends or a restart is due: no wake-ups while every worker runs
        while not self.stop_event.is_set():
            self._ended.clear()  # before looking: an end from now on cuts the next wait short
            now = time.monotonic()
            due = []
            for slot in self._slots.values():
                if not slot.running and slot.next_start:
                    if now >= slot.next_start:
                        slot.next_start = 0.0
                        log.info("restarting worker %s", slot.worker.name)
                        self._start(slot)
                    else:
                        due.append(slot.next_start - now)
            self._ended.wait(min(due, default=MONITOR_IDLE_S))

    def healthy(self) -> bool:
        """True while every worker is running (the systemd watchdog is fed only then)."""
        return all(slot.running for slot in self._slots.values())

    def status(self) -> list[WorkerStatus]:
        """Each worker's health, as /api/status and `fieldstation status` show it."""
        return [
            {
                "name": name,
                "running": slot.running,
                "restarts": slot.restarts,
                "last_error": slot.last_error,
            }
            for name, slot in self._slots.items()
        ]

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every worker to stop and wait for them (SIGTERM drains through here)."""
        self.stop_event.set()
        self._ended.set()
        for slot in self._slots.values():
            bell = getattr(slot.worker, "doorbell", None)
            if isinstance(bell, Doorbell):  # asleep on its own bell: it hears the stop at once
                bell.ring()
        deadline = time.monotonic() + timeout
        for slot in self._slots.values():
            if slot.thread is not None:
                slot.thread.join(max(0.0, deadline - time.monotonic()))
                if slot.thread.is_alive():
                    log.warning("worker %s did not stop within %.0f s", slot.worker.name, timeout)
