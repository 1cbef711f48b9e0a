"""The power worker: reads the sources, moves between states, publishes a PowerState, applies policy.

Subscribers (uploader, inference, model sync) register a callback and get every new PowerState;
units get the state's CONFIG through the daemon's command path.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.power.critical import CriticalEpisode, Runner
from agent.power.history import Hold, PowerHistory
from agent.power.metrics import PowerMetrics
from agent.power.policy import Decisions, confirmed, decide, technician_keys, with_technician
from agent.power.runway import EnergyMeter, Trend
from agent.power.settings import PowerSection
from agent.power.sources import Reading, Source, SourceError, open_source
from agent.power.states import PowerStates, State
from agent.power.trust import Judge, SourceHealth, pick
from agent.store import Store, StoreError

log = logging.getLogger(__name__)

WAKE_GAP_S = 5.0  # a unit silent this long before a frame has woken anew (its HELLO)

CommandPath = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class PowerState:
    """What the station runs as now, and why. Subscribers act on `decisions`."""

    state: State  # in effect (a hold keeps NORMAL)
    measured: State  # what the battery says
    charging: bool | None
    since: float
    reason: str
    reading: Reading | None
    hold_until: float | None
    hold_note: str | None  # e.g. the hold is overridden below the hard floor
    decisions: Decisions

    @property
    def held(self) -> bool:
        return self.hold_until is not None and self.state != self.measured

    def label(self) -> str:
        text = self.state.value.upper()
        if self.hold_until is not None:
            text += f" (held; measured {self.measured.value.upper()})"
        return text

    def as_dict(self) -> dict[str, Any]:
        d = self.decisions
        return {
            "state": self.state.value,
            "measured": self.measured.value,
            "charging": self.charging,
            "since": self.since,
            "reason": self.reason,
            "reading": self.reading.as_dict() if self.reading else None,
            "hold_until": self.hold_until,
            "hold_note": self.hold_note,
            "policy": {
                "inference": d.inference,
                "uploads_allowed": d.uploads_allowed,
                "uploads": d.uploads_reason,
                "downloads_allowed": d.downloads_allowed,
                "unit_config": d.unit_config,
            },
        }


@dataclass
class _UnitPush:
    sent_at: float = 0.0
    last_seen: float = 0.0
    due: bool = True
    via: str = ""  # "mqtt" or "serial", as the daemon last saw the unit
    error: str | None = None
    wanted: dict[str, int] = field(default_factory=dict)
    technician: dict[str, int] = field(default_factory=dict)  # keys over the state's, for now
    technician_held: bool = False  # given under a hold: it ends with the hold


class PowerWorker:
    """Supervised worker `power`; `tick()` is one look at the sources (tests call it directly)."""

    name = "power"

    def __init__(
        self,
        settings: PowerSection,
        store: Store,
        metrics: Any = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        send_command: CommandPath | None = None,
        checkpoint: Callable[[], None] | None = None,
        run: Runner = subprocess.run,
        sources: list[Source] | None = None,
        observe_only: bool = False,
    ) -> None:
        self.s = settings
        # `fieldstation power` with the daemon down: look, never record, push or shut down
        self.observe_only = observe_only
        self.store = store
        self.clock = clock
        self.monotonic = monotonic
        self.send_command = send_command
        self.history = PowerHistory(store, settings.history_rows)
        root = Path(settings.sysfs_root)
        self.sources = (
            sources
            if sources is not None
            else [open_source(cfg, root, clock) for cfg in settings.sources]
        )
        self.health = [
            SourceHealth(src.name, cfg.stale_s)
            for src, cfg in zip(self.sources, [s.config for s in self.sources], strict=True)
        ]
        self.judge = Judge(settings.max_soc_rate_per_h, settings.stuck_after_s)
        now = clock()
        self.states = PowerStates(settings, *self._restored_state(now))
        self.trend = Trend()
        for row in self.history.readings(now - self.trend.window_s):
            self.trend.add(row.at, row.soc, row.power_w)
        self.energy = EnergyMeter(settings.board_watts)
        held = self.history.hold()
        self.hold_until: float | None = held.until if held and held.until > now else None
        self.critical = CriticalEpisode(
            settings, checkpoint=checkpoint, record=self._event, run=run, started_at=now
        )
        self._subscribers: list[Callable[[PowerState], None]] = []
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._units: dict[str, _UnitPush] = {}
        self._last_history = 0.0
        self.history_errors = 0
        self.reading: Reading | None = None
        self.ticks = 0
        self.current = self._compose(now)
        self.metrics = PowerMetrics(metrics.registry, self) if metrics is not None else None

    # --- what others call ----------------------------------------------------------------------

    def subscribe(self, callback: Callable[[PowerState], None]) -> None:
        """Call `callback(state)` now and after every change of state, charging, hold or policy."""
        with self._lock:
            self._subscribers.append(callback)
            state = self.current
        self._notify_one(callback, state)

    def hold(self, duration_s: float, reason: str = "technician") -> PowerState:
        """Keep NORMAL behaviour this long whatever the battery says (short of the hard floor)."""
        if duration_s < 0:
            raise ValueError(f"hold duration {duration_s} is negative")
        now = self.clock()
        with self._lock:
            if duration_s == 0:
                self.hold_until = None
                self._record(self.history.set_hold, None)
                self._event("hold_cleared", reason)
            else:
                self.hold_until = now + duration_s
                self._record(self.history.set_hold, Hold(self.hold_until, now, reason))
                self._event("hold", f"{duration_s:.0f} s by {reason}")
            self._publish(now)
            state = self.current
        self._wake.set()
        return state

    def unit_seen(self, unit_id: str, via: str = "") -> None:
        """A frame from a unit arrived (ingest thread): after a silence it is a new wake, so a
        unit that has not confirmed the current CONFIG gets it now, while it listens."""
        now = self.monotonic()
        with self._lock:
            push = self._units.get(unit_id)
            new = push is None
            if push is None:
                push = self._units[unit_id] = _UnitPush()
            push.via = via or push.via
            woke = now - push.last_seen > WAKE_GAP_S
            if woke:
                push.due = True
            push.last_seen = now
        # every chunk of a capture lands here; only a new wake of the unit rouses the loop (each
        # pass reads every unit row), so a burst of frames costs one pass, not one per frame
        if new or woke:
            self._wake.set()

    def technician_config(
        self, unit_id: str, body: dict[str, Any], send: CommandPath
    ) -> dict[str, Any]:
        """A technician's CONFIG for one unit: its keys win over the state's until the state
        changes (or the hold it was given under ends); the rule is in agent/power/policy.py.

        Sends the whole CONFIG through `send` and records the keys only once it went out."""
        keys = technician_keys(body)
        with self._lock:  # held across the send: push_units must not slip the state's in between
            push = self._units.setdefault(unit_id, _UnitPush())
            keys = {**push.technician, **keys}
            wanted = with_technician(self.current.decisions.unit_config, keys)
            out: dict[str, Any] = {**body, **wanted, "command": "config"}
            if push.via == "mqtt":  # replaces the state's retained CONFIG at the broker
                out["station_time_ms"], out["retain"] = 0, True
            result = send(unit_id, out)
            push.technician = keys
            push.technician_held = self.current.hold_until is not None
            push.wanted, push.due, push.error = wanted, False, None
            push.sent_at = self.monotonic()
        log.info("power: unit %s keeps the technician's %s until the state changes", unit_id, keys)
        return result

    def unit_config(self, unit_id: str) -> dict[str, int]:
        """What the station asks of one unit now: the state's CONFIG, the technician's keys over it."""
        with self._lock:
            push = self._units.get(unit_id)
            wanted = self.current.decisions.unit_config
            return with_technician(wanted, push.technician) if push else dict(wanted)

    def capture_stored(self, unit_id: str, capture_id: str, duplicate: bool) -> None:
        if not duplicate:
            self.energy.capture()

    # --- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        # the loop sleeps on one event; this thread turns the station's stop into that event
        def relay_stop() -> None:
            stop.wait()
            self._wake.set()

        threading.Thread(target=relay_stop, name="power-stop", daemon=True).start()
        next_read = 0.0
        while not stop.is_set():
            hold_over = self.hold_until is not None and self.clock() >= self.hold_until
            if self.monotonic() >= next_read or hold_over:
                self.tick()
                slower = 1.0 if self.current.measured == State.NORMAL else self.s.low_read_factor
                next_read = self.monotonic() + self.s.read_interval_s * slower
            self.push_units()
            wait = next_read - self.monotonic()
            if self.hold_until is not None:
                wait = min(wait, self.hold_until - self.clock() + 0.05)
            self._wake.wait(max(0.0, wait))
            self._wake.clear()

    def tick(self) -> PowerState:
        """Read every source, judge it, pick the reading, update the state, apply the policy."""
        now = self.clock()
        for src, h in zip(self.sources, self.health, strict=True):
            try:
                r = src.read()
            except SourceError as exc:
                if h.error != str(exc) and not self.observe_only:
                    log.warning("power source %s: %s", h.name, exc)
                self.judge.failed(h, str(exc))
                continue
            h.name = src.name
            was = h.flag
            self.judge.assess(h, r)
            if h.flag and h.flag != was and not self.observe_only:
                log.warning("power source %s not trusted: %s", h.name, h.error)
        reading = pick(self.health, now)
        with self._lock:
            self.reading = reading
            self.ticks += 1
            if reading is not None:
                self.trend.add(reading.at, reading.soc, reading.power_w)
            t = self.states.update(reading, now)
            if t is not None and not self.observe_only:
                log.warning("power: %s -> %s: %s", t.old.value, t.new.value, t.reason)
                if self.metrics is not None:
                    self.metrics.transitions.labels(t.new.value).inc()
                self._record(
                    self.history.add_transition,
                    now,
                    t.old.value,
                    t.new.value,
                    t.reason,
                    self._evidence(now),
                )
            if (
                reading is not None
                and not self.observe_only
                and now - self._last_history >= self.s.history_interval_s
            ):
                self._last_history = now
                self._record(self.history.add_reading, reading, self.states.state.value)
            if self.hold_until is not None and now >= self.hold_until and not self.observe_only:
                log.info("power: the hold expired")
                self.hold_until = None
                self._record(self.history.set_hold, None)
                self._event("hold_expired", "")
            self._publish(now)
            return self.current

    def _evidence(self, now: float) -> dict[str, object]:
        return {
            "chosen": self.reading.as_dict() if self.reading else None,
            "sources": [h.describe(now) for h in self.health],
        }

    # --- publishing ----------------------------------------------------------------------------

    def _compose(self, now: float) -> PowerState:
        measured = self.states.state
        hold_note = None
        state = measured
        soc = self.reading.soc if self.reading else None
        if self.hold_until is not None and now < self.hold_until:
            if soc is not None and soc <= self.s.hard_floor_soc:
                state = State.CRITICAL
                hold_note = (
                    f"hold overridden: charge {soc:.0f}% is at or below the hard floor "
                    f"{self.s.hard_floor_soc:g}%"
                )
            else:
                state = State.NORMAL
        elif soc is not None and soc <= self.s.hard_floor_soc:
            state = State.CRITICAL
        charging = self.states.charging
        reason = self.states.reason
        if not self.sources:
            reason = "no power sources configured: always NORMAL"
        elif self.reading is None and self.ticks:
            reason = f"no trusted reading; staying {measured.value.upper()} ({reason})"
        return PowerState(
            state=state,
            measured=measured,
            charging=charging,
            since=self.states.since,
            reason=reason,
            reading=self.reading,
            hold_until=self.hold_until,
            hold_note=hold_note,
            decisions=decide(self.s, state.value, charging, now),
        )

    def _publish(self, now: float) -> None:
        old = self.current
        new = self._compose(now)
        self.current = new
        if self.metrics is not None:
            self.metrics.update(new, now)
        if new.decisions.unit_config != old.decisions.unit_config:
            for push in self._units.values():
                push.due = True
        hold_ended = old.hold_until is not None and new.hold_until is None
        for unit_id, push in self._units.items():
            if push.technician and (
                new.state != old.state or (hold_ended and push.technician_held)
            ):
                log.info(
                    "power: %s; unit %s gets the %s policy's CONFIG again",
                    "the hold ended" if new.state == old.state else "the state changed",
                    unit_id,
                    new.state.value.upper(),
                )
                push.technician, push.due = {}, True
        changed = (
            new.state != old.state
            or new.measured != old.measured
            or new.charging != old.charging
            or new.hold_until != old.hold_until
            or new.decisions != old.decisions
        )
        if changed:  # subscribers first: CRITICAL stops the work before checkpoint and halt
            for cb in list(self._subscribers):
                self._notify_one(cb, new)
        if self.observe_only:
            return
        if new.state == State.CRITICAL:
            outcome = self.critical.begin(now)
            if old.state != State.CRITICAL:
                log.warning("power: CRITICAL actions: %s", outcome)
        else:
            self.critical.end()

    def _notify_one(self, cb: Callable[[PowerState], None], state: PowerState) -> None:
        try:
            cb(state)
        except Exception:
            log.exception("power subscriber failed")

    def _event(self, kind: str, detail: str) -> None:
        self._record(self.history.add_event, self.clock(), kind, detail)

    def _record(self, write: Callable[..., None], *args: Any) -> None:
        """Write to the power history; a full or failing disk must not stop the power policy."""
        try:
            write(*args)
        except (sqlite3.Error, StoreError) as exc:
            self.history_errors += 1
            if self.history_errors == 1 or self.history_errors % 100 == 0:
                log.error("power history not written (%d so far): %s", self.history_errors, exc)

    # --- units ---------------------------------------------------------------------------------

    def push_units(self) -> int:
        """Send the state's CONFIG to every unit that has not confirmed it and is due; return sent."""
        if not self.manages_units or self.send_command is None or self.observe_only:
            return 0
        now = self.monotonic()
        sent = 0
        rows = {row["unit_id"]: row for row in self.store.units()}
        with self._lock:
            # a unit whose first HELLO is not stored yet is already due
            names = sorted(set(rows) | set(self._units))
        for unit in names:
            row = rows.get(unit)
            report = json.loads(row["config"]) if row is not None and row["config"] else None
            with self._lock:
                push = self._units.setdefault(unit, _UnitPush())
                wanted = with_technician(self.current.decisions.unit_config, push.technician)
                if push.wanted != wanted:
                    push.wanted, push.due = dict(wanted), True
                if confirmed(report, wanted):
                    push.due = False
                    push.error = None
                    continue
                if not push.due and now - push.sent_at < self.s.unit_resend_s:
                    continue
                push.due = False
                push.sent_at = now
                via = push.via or (row["last_path"] if row is not None else "")
            body: dict[str, Any] = {"command": "config", **wanted}
            if via == "mqtt":
                # retained at the broker for a unit waking later: no clock in it, it would be stale
                body["station_time_ms"] = 0
                body["retain"] = True
            try:
                self.send_command(unit, body)
                push.error = None
                sent += 1
            except LookupError:
                push.error = "not seen since the station started; sent at its next wake"
            except (OSError, ConnectionError, ValueError) as exc:
                push.error = str(exc)
                log.warning("power: CONFIG to unit %s failed: %s", unit, exc)
        return sent

    @property
    def manages_units(self) -> bool:
        """Units follow the power policy only where the station measures its power."""
        return bool(self.sources) and self.s.manage_units

    def units_status(self) -> list[dict[str, Any]]:
        out = []
        for row in self.store.units():
            report = json.loads(row["config"]) if row["config"] else None
            push = self._units.get(row["unit_id"])
            wanted = self.unit_config(row["unit_id"])
            out.append(
                {
                    "unit_id": row["unit_id"],
                    "confirmed": confirmed(report, wanted) if self.manages_units else None,
                    "technician": dict(push.technician) if push and push.technician else None,
                    "battery_v": row["battery_mv"] / 1000 if row["battery_mv"] else None,
                    "battery_at": row["last_seen"],
                    "note": push.error if push else None,
                }
            )
        return out

    # --- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For `fieldstation power`, /api/power and /api/status."""
        now = self.clock()
        with self._lock:
            cur = self.current
            doc = cur.as_dict()
            doc["sources"] = [h.describe(now) for h in self.health]
            doc["runway"] = self.trend.runway(self.reading, self.s.battery_wh).as_dict()
        known = not self.observe_only or bool(self.history.transitions(1))
        doc["time_in_state_s"] = round(now - cur.since, 1) if known else None
        doc["energy"] = self.energy.per_capture()
        doc["units"] = self.units_status()
        doc["critical"] = self.critical.outcome
        doc["transitions"] = self.history.transitions(10)
        doc["daemon"] = not self.observe_only
        return doc

    def heartbeat(self) -> dict[str, Any]:
        """What heartbeats carry: the state and the battery reading."""
        cur = self.current
        r = cur.reading
        return {
            "power_state": cur.state.value,
            "battery": None
            if r is None
            else {
                "soc": r.soc,
                "voltage_v": r.voltage_v,
                "current_a": r.current_a,
                "charging": cur.charging,
                "source": r.source,
                "held": cur.hold_until is not None,
            },
        }

    def close(self) -> None:
        for src in self.sources:
            src.close()

    def _restored_state(self, now: float) -> tuple[float, State, str]:
        """The last transition (time, state, reason): a restart inside a hysteresis band keeps it."""
        last = self.history.transitions(1)
        if not last:
            return now, State.NORMAL, "starting"
        t = last[0]
        return float(str(t["at"])), State(str(t["to"])), str(t["reason"])
