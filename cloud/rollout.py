"""Rollouts: one model version to a set of stations, in waves, judged on what stations report.

This module owns the `model_releases`, `rollouts`, `rollout_targets` and `station_labels` tables.
A rollout's waves name stations by id, by cohort label or by a stable percentage (a hash of the
station id and name@version, so 10% stays the same 10%). A wave starts when the one before it
reached its success threshold of stations that passed probation; any wave reached so far at or past
its error threshold pauses the rollout, a finished one too (hawkBit's rule). A station that does not report within `timeout_s` is `timed_out`, and is picked up again
as soon as it reports. The manifest each station fetches is computed here from this state.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from cloud.db import Database
from cloud.db.sqlite import SQLiteDatabase

ROLLOUT_LOCK = 0x726F6C6C  # advisory lock key of rollout state on PostgreSQL ("roll")

# What a targeted station is doing, as the operator sees it.
TARGET_STATES = (
    "waiting",  # its wave has not started
    "pending",  # told, nothing heard yet
    "downloading",
    "verifying",
    "shadow",
    "probation",  # running it, the station still watching it
    "active",  # running it, probation passed
    "failed",
    "rolling_back",  # operator rollback sent, station not back yet
    "rolled_back",
    "timed_out",
)
DONE = ("active", "failed", "rolled_back")
RUNNING = ("probation", "active")  # the station runs the rollout's version
ERRORS = ("failed", "rolled_back")
# Station job stages that map straight onto target states.
JOB_STATES = ("downloading", "verifying", "shadow", "failed")
LIVE = ("running", "paused", "finished")


class RolloutError(ValueError):
    """An operator request cannot be done; the message says why."""


@dataclass(frozen=True)
class Wave:
    """Who a wave adds: station ids, a cohort label, and/or a cumulative percentage of the fleet."""

    stations: tuple[str, ...] = ()
    cohort: str | None = None
    percent: float | None = None

    def describe(self) -> str:
        parts = []
        if self.stations:
            parts.append("stations " + ",".join(self.stations))
        if self.cohort:
            parts.append(f"cohort {self.cohort}")
        if self.percent is not None:
            parts.append(f"{self.percent:g}%")
        return " + ".join(parts) or "nobody"


@dataclass(frozen=True)
class RolloutSpec:
    waves: tuple[Wave, ...]
    success_threshold: float = 1.0  # share of a wave past probation before the next starts
    error_threshold: float = 0.5  # share of a wave failed or rolled back that pauses the rollout
    timeout_s: float = 3600.0  # no report for this long: timed_out
    min_agreement: float | None = None  # shadow-run agreement below which stations refuse it

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RolloutSpec:
        d = json.loads(text)
        waves = tuple(
            Wave(tuple(w.get("stations") or ()), w.get("cohort"), w.get("percent"))
            for w in d.pop("waves")
        )
        return cls(waves=waves, **d)


@dataclass
class Target:
    station_id: str
    wave: int
    state: str
    reason: str | None
    previous_version: str | None
    updated_at: float
    reported_at: float | None


@dataclass
class Rollout:
    rollout_id: str
    name: str
    version: str
    created_at: float
    updated_at: float
    state: str
    wave: int
    spec: RolloutSpec
    reason: str | None
    targets: dict[str, Target] = field(default_factory=dict)


def bucket(key: str, station_id: str) -> float:
    """The station's stable place in 0..100 for percentage waves of `key` (name@version)."""
    digest = hashlib.sha256(f"{key}\n{station_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


# --- releases and labels -------------------------------------------------------------------------


def record_release(
    db: Database,
    name: str,
    version: str,
    sha256: str,
    size: int,
    object_key: str,
    card: dict[str, Any],
    key_id: str,
    signature: str,
) -> float:
    """Record a signed, stored package; refuse a name@version that is already published."""
    from cloud.models import PublishError

    at = time.time()
    try:
        with db.transaction() as cur:
            cur.execute("SELECT 1 FROM models WHERE name = ? AND version = ?", (name, version))
            if cur.fetchone() is not None:
                raise PublishError(f"{name}@{version} is already published")
            cur.execute(
                "INSERT INTO models (name, version, sha256, size, object_key, published_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, version, sha256, size, object_key, at),
            )
            cur.execute(
                "INSERT INTO model_releases (name, version, card, key_id, signature) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, version, json.dumps(card, sort_keys=True), key_id, signature),
            )
    except PublishError:
        raise
    except Exception as exc:  # a concurrent publish won the primary key
        if db.get_model(name, version) is not None:
            raise PublishError(f"{name}@{version} is already published") from None
        raise exc
    return at


def get_release(db: Database, name: str, version: str) -> dict[str, Any] | None:
    """A published, signed version as the manifest carries it (None when not published)."""
    with db.transaction(write=False) as cur:
        cur.execute(
            "SELECT m.sha256, m.size, m.published_at, r.card, r.key_id, r.signature "
            "FROM models m JOIN model_releases r ON r.name = m.name AND r.version = m.version "
            "WHERE m.name = ? AND m.version = ?",
            (name, version),
        )
        row = cur.fetchone()
    if row is None:
        return None
    return {
        "name": name,
        "version": version,
        "sha256": row[0],
        "size": int(row[1]),
        "url": f"/v1/models/{name}/{version}/artifact",
        "published_at": row[2],
        "card": json.loads(row[3]),
        "key_id": row[4],
        "signature": row[5],
    }


def set_labels(db: Database, station_id: str, labels: list[str]) -> None:
    """Replace a station's cohort labels."""
    with db.transaction() as cur:
        cur.execute("DELETE FROM station_labels WHERE station_id = ?", (station_id,))
        for label in sorted(set(labels)):
            cur.execute(
                "INSERT INTO station_labels (station_id, label) VALUES (?, ?)", (station_id, label)
            )


def station_labels(db: Database) -> dict[str, set[str]]:
    with db.transaction(write=False) as cur:
        cur.execute("SELECT station_id, label FROM station_labels")
        rows = cur.fetchall()
    out: dict[str, set[str]] = {}
    for station_id, label in rows:
        out.setdefault(station_id, set()).add(label)
    return out


# --- reading and writing rollouts ----------------------------------------------------------------

_ROLLOUT_COLUMNS = "rollout_id, name, version, created_at, updated_at, state, wave, spec, reason"


def _select(cur: Any, where: str = "", args: tuple[Any, ...] = ()) -> list[Rollout]:
    cur.execute(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts {where} ORDER BY created_at", args)
    out = []
    for r in cur.fetchall():
        spec = RolloutSpec.from_json(r[7])
        out.append(Rollout(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), spec, r[8]))
    for rollout in out:
        cur.execute(
            "SELECT station_id, wave, state, reason, previous_version, updated_at, reported_at "
            "FROM rollout_targets WHERE rollout_id = ?",
            (rollout.rollout_id,),
        )
        for t in cur.fetchall():
            rollout.targets[t[0]] = Target(t[0], int(t[1]), t[2], t[3], t[4], t[5], t[6])
    return out


def _load(db: Database, where: str = "", args: tuple[Any, ...] = ()) -> list[Rollout]:
    with db.transaction(write=False) as cur:
        return _select(cur, where, args)


@contextmanager
def _locked(db: Database) -> Iterator[Any]:
    """A write transaction that holds the rollout lock from its start, across processes and
    replicas, so a read-modify-write of rollout state never loses another's update."""
    with db.transaction() as cur:
        if isinstance(db, SQLiteDatabase):
            cur.execute("UPDATE rollouts SET wave = wave WHERE 1 = 0")  # takes SQLite's write lock
        else:
            cur.execute("SELECT pg_advisory_xact_lock(?)", (ROLLOUT_LOCK,))
        yield cur


def _save(cur: Any, rollout: Rollout, changed: set[str], *, row: bool = True) -> None:
    if row:
        cur.execute(
            "UPDATE rollouts SET updated_at = ?, state = ?, wave = ?, reason = ? "
            "WHERE rollout_id = ?",
            (rollout.updated_at, rollout.state, rollout.wave, rollout.reason, rollout.rollout_id),
        )
    for station_id in sorted(changed):
        t = rollout.targets[station_id]
        cur.execute(
            "INSERT INTO rollout_targets (rollout_id, station_id, wave, state, reason, "
            "previous_version, updated_at, reported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (rollout_id, station_id) DO UPDATE SET wave = excluded.wave, "
            "state = excluded.state, reason = excluded.reason, "
            "previous_version = excluded.previous_version, updated_at = excluded.updated_at, "
            "reported_at = excluded.reported_at",
            (
                rollout.rollout_id,
                t.station_id,
                t.wave,
                t.state,
                t.reason,
                t.previous_version,
                t.updated_at,
                t.reported_at,
            ),
        )


def rollouts_of(db: Database, name: str) -> list[Rollout]:
    """Every rollout of model `name`, oldest first."""
    return _load(db, "WHERE name = ?", (name,))


def latest(db: Database, name: str) -> Rollout:
    found = rollouts_of(db, name)
    if not found:
        raise RolloutError(f"model {name!r} has no rollout")
    return found[-1]


# --- operator actions ----------------------------------------------------------------------------


def create(
    db: Database, name: str, version: str, spec: RolloutSpec, now: float | None = None
) -> Rollout:
    """Start rolling `name` `version` out; a live rollout of the same model is superseded."""
    now = time.time() if now is None else now
    if get_release(db, name, version) is None:
        raise RolloutError(f"{name}@{version} is not published (fieldstation-cloud models publish)")
    if not spec.waves:
        raise RolloutError("a rollout needs at least one wave")
    for t in (spec.success_threshold, spec.error_threshold):
        if not 0 < t <= 1:
            raise RolloutError(f"threshold {t} must be in (0, 1]")
    with _locked(db) as cur:
        earlier = _select(cur, "WHERE name = ?", (name,))
        rollout_id = f"{name}@{version}#{len(earlier) + 1}"
        for old in earlier:
            if old.state in LIVE:
                cur.execute(
                    "UPDATE rollouts SET state = 'superseded', updated_at = ?, reason = ? "
                    "WHERE rollout_id = ?",
                    (now, f"superseded by {rollout_id}", old.rollout_id),
                )
        cur.execute(
            f"INSERT INTO rollouts ({_ROLLOUT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rollout_id, name, version, now, now, "running", 0, spec.to_json(), None),
        )
    evaluate(db, now)
    return next(r for r in rollouts_of(db, name) if r.rollout_id == rollout_id)


def _change(db: Database, name: str, now: float | None, action: str) -> Rollout:
    now = time.time() if now is None else now
    evaluate(db, now)
    with _locked(db) as cur:
        found = _select(cur, "WHERE name = ?", (name,))
        if not found:
            raise RolloutError(f"model {name!r} has no rollout")
        rollout = found[-1]
        _act(rollout, action, now, cur)
    evaluate(db, now)
    return latest(db, name)


def _act(rollout: Rollout, action: str, now: float, cur: Any) -> None:
    changed: set[str] = set()
    if action == "pause":
        _need(rollout, ("running",), action)
        rollout.state, rollout.reason = "paused", "paused by the operator"
    elif action == "resume":
        _need(rollout, ("paused",), action)
        rollout.state, rollout.reason = "running", None
    elif action == "promote":
        _need(rollout, ("running", "paused"), action)
        if rollout.wave + 1 >= len(rollout.spec.waves):
            raise RolloutError(f"{rollout.rollout_id} is already at its last wave")
        changed |= _start_wave(rollout, rollout.wave + 1, now)
        rollout.state, rollout.reason = "running", None
    elif action == "cancel":
        _need(rollout, LIVE, action)
        rollout.state, rollout.reason = "cancelled", "cancelled by the operator"
    elif action == "rollback":
        _need(rollout, (*LIVE, "cancelled"), action)
        rollout.state, rollout.reason = "rolled_back", "rolled back by the operator"
        for t in rollout.targets.values():
            if t.wave <= rollout.wave and t.previous_version and t.state != "waiting":
                t.state, t.reason, t.updated_at = "rolling_back", None, now
                changed.add(t.station_id)
    rollout.updated_at = now
    _save(cur, rollout, changed)


def _need(rollout: Rollout, states: tuple[str, ...], action: str) -> None:
    if rollout.state not in states:
        raise RolloutError(f"cannot {action} {rollout.rollout_id}: it is {rollout.state}")


def pause(db: Database, name: str, now: float | None = None) -> Rollout:
    return _change(db, name, now, "pause")


def resume(db: Database, name: str, now: float | None = None) -> Rollout:
    return _change(db, name, now, "resume")


def promote(db: Database, name: str, now: float | None = None) -> Rollout:
    """Start the next wave now, whatever the success threshold says."""
    return _change(db, name, now, "promote")


def cancel(db: Database, name: str, now: float | None = None) -> Rollout:
    """Stop offering the version; stations that activated it keep it."""
    return _change(db, name, now, "cancel")


def rollback(db: Database, name: str, now: float | None = None) -> Rollout:
    """Every targeted station goes back to the version it had."""
    return _change(db, name, now, "rollback")


def _start_wave(rollout: Rollout, wave: int, now: float) -> set[str]:
    rollout.wave = wave
    changed = set()
    for t in rollout.targets.values():
        if t.wave <= wave and t.state == "waiting":
            t.state, t.updated_at = "pending", now
            changed.add(t.station_id)
    return changed


# --- evaluation ----------------------------------------------------------------------------------


def _membership(rollout: Rollout, fleet: list[str], labels: dict[str, set[str]]) -> dict[str, int]:
    key = f"{rollout.name}@{rollout.version}"
    out: dict[str, int] = {}
    for i, wave in enumerate(rollout.spec.waves):
        for station_id in [*wave.stations, *fleet]:
            if station_id in out:
                continue
            if (
                station_id in wave.stations
                or (wave.cohort is not None and wave.cohort in labels.get(station_id, set()))
                or (wave.percent is not None and bucket(key, station_id) < wave.percent)
            ):
                out[station_id] = i
    return out


def wave_counts(rollout: Rollout, wave: int) -> dict[str, int]:
    members = [t for t in rollout.targets.values() if t.wave == wave]
    return {
        "targets": len(members),
        "active": sum(t.state == "active" for t in members),
        "probation": sum(t.state == "probation" for t in members),
        "errors": sum(t.state in ERRORS for t in members),
        "timed_out": sum(t.state == "timed_out" for t in members),
    }


def evaluate(db: Database, now: float | None = None) -> None:
    """Bring every live rollout up to date: new targets, timeouts, wave thresholds."""
    now = time.time() if now is None else now
    fleet = [s["station_id"] for s in db.list_stations() if not s["revoked"]]
    labels = station_labels(db)
    with _locked(db) as cur:
        for rollout in _select(
            cur, "WHERE state IN ('running', 'paused', 'finished', 'rolled_back')"
        ):
            _evaluate_one(cur, rollout, fleet, labels, now)


def _error_wave(rollout: Rollout) -> str | None:
    """Why the first wave reached so far that is at or past the error threshold pauses, or None."""
    limit = rollout.spec.error_threshold
    for wave in range(rollout.wave + 1):
        counts = wave_counts(rollout, wave)
        n, errors = counts["targets"], counts["errors"]
        if n and errors and errors / n >= limit:
            return f"wave {wave + 1}: {errors} of {n} failed or rolled back (error threshold {limit:.0%})"
    return None


def _evaluate_one(
    cur: Any, rollout: Rollout, fleet: list[str], labels: dict[str, set[str]], now: float
) -> None:
    changed: set[str] = set()
    dirty = False
    if rollout.state in LIVE:
        for station_id, wave in _membership(rollout, fleet, labels).items():
            if station_id not in rollout.targets:
                state = "pending" if wave <= rollout.wave else "waiting"
                rollout.targets[station_id] = Target(station_id, wave, state, None, None, now, None)
                changed.add(station_id)
    for t in rollout.targets.values():
        if t.state in (*DONE, "waiting", "timed_out"):
            continue
        heard = max(t.updated_at, t.reported_at or 0.0)
        if now - heard > rollout.spec.timeout_s:
            t.state, t.updated_at = "timed_out", now
            t.reason = f"no report for {rollout.spec.timeout_s:g} s"
            changed.add(t.station_id)
    while rollout.state in ("running", "finished"):
        # every wave reached counts: a station that rolls back after its wave moved on, or after
        # the rollout finished, still pauses it, so the operator sees it before more go out
        crossed = _error_wave(rollout)
        if crossed is not None:
            rollout.state, rollout.reason, dirty = "paused", crossed, True
            break
        if rollout.state == "finished":
            break
        counts = wave_counts(rollout, rollout.wave)
        n = counts["targets"]
        if n and counts["active"] / n < rollout.spec.success_threshold:
            break
        if rollout.wave + 1 >= len(rollout.spec.waves):
            if all(t.state in DONE for t in rollout.targets.values()):
                rollout.state, rollout.reason, dirty = "finished", None, True
            break
        changed |= _start_wave(rollout, rollout.wave + 1, now)
        dirty = True
    if changed or dirty:
        rollout.updated_at = now
        _save(cur, rollout, changed)


# --- station side: reports in, manifest out ------------------------------------------------------


def apply_report(
    db: Database, station_id: str, report: dict[str, Any], now: float | None = None
) -> None:
    """Fold a station's model report (its heartbeat's `modelsync` block) into its targets.

    Shape: {"models": {NAME: {"active": V, "job": {"version", "state", "reason"},
    "bad": {V: reason}, "rolled_back": {V: reason}}}}. Unknown shapes are ignored.
    """
    now = time.time() if now is None else now
    models = report.get("models") if isinstance(report, dict) else None
    if not isinstance(models, dict):
        return
    with _locked(db) as cur:
        for name, info in models.items():
            if isinstance(info, dict):
                _apply_one(cur, station_id, str(name), info, now)
    evaluate(db, now)


def _apply_one(cur: Any, station_id: str, name: str, info: dict[str, Any], now: float) -> None:
    active = info.get("active")
    job = _mapping(info.get("job"))
    bad = _mapping(info.get("bad"))
    undone = _mapping(info.get("rolled_back"))
    previous = info.get("previous") if isinstance(info.get("previous"), list) else []
    for rollout in _select(cur, "WHERE name = ?", (name,)):
        t = rollout.targets.get(station_id)
        if t is None or t.state == "waiting":
            continue
        state, reason = t.state, t.reason
        v = rollout.version
        if rollout.state == "rolled_back" and t.state in ("rolling_back", "rolled_back"):
            if active is not None and active == t.previous_version:
                state, reason = "rolled_back", "rolled back by the operator"
        elif v in undone:
            state, reason = "rolled_back", str(undone[v])
        elif v in bad:
            state, reason = "failed", str(bad[v])
        elif active == v:
            # active only once probation passed (a report without the flag: nothing to watch)
            state, reason = ("probation" if info.get("probation") else "active"), None
        elif job.get("version") == v and job.get("state") in JOB_STATES:
            state, reason = str(job["state"]), job.get("reason")
        elif t.state in ("timed_out", *RUNNING) and rollout.state in LIVE:
            state, reason = "pending", None  # back after a silence, or moved off it
        if t.previous_version is None and active and active != v:
            t.previous_version = str(active)
        elif t.previous_version is None and active == v and previous:
            t.previous_version = str(previous[0])  # it switched before we heard of it
        t.state, t.reason, t.reported_at = state, reason, now
        _save(cur, rollout, {station_id}, row=False)


def _mapping(value: Any) -> dict[str, Any]:
    """A report field that should be an object; anything else reads as empty."""
    return value if isinstance(value, dict) else {}


def desired_versions(db: Database, station_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(version, rollout facts) per model this station should run, from the rollouts' state."""
    by_name: dict[str, list[Rollout]] = {}
    for rollout in _load(db):
        by_name.setdefault(rollout.name, []).append(rollout)
    out = []
    for rollouts in by_name.values():
        for r in reversed(rollouts):
            t = r.targets.get(station_id)
            if t is None or t.wave > r.wave or t.state == "waiting" or r.state == "cancelled":
                continue
            if r.state == "superseded" and t.state not in RUNNING:
                continue
            if r.state == "rolled_back":
                if not t.previous_version:
                    continue
                out.append((t.previous_version, {"rollout_id": r.rollout_id, "name": r.name}))
                break
            facts: dict[str, Any] = {
                "rollout_id": r.rollout_id,
                "name": r.name,
                "min_agreement": r.spec.min_agreement,
            }
            out.append((r.version, facts))
            break
    return out


def station_manifest(
    db: Database, station_id: str, now: float | None = None
) -> list[dict[str, Any]]:
    """The signed releases this station should run (its part of GET /v1/models/manifest)."""
    evaluate(db, now)
    entries = []
    for version, facts in desired_versions(db, station_id):
        release = get_release(db, facts["name"], version)
        if release is None:
            release = {"name": facts["name"], "version": version, "missing": True}
        release["rollout_id"] = facts["rollout_id"]
        if facts.get("min_agreement") is not None:
            release["min_agreement"] = facts["min_agreement"]
        entries.append(release)
    return sorted(entries, key=lambda e: e["name"])


def status(db: Database, name: str, now: float | None = None) -> dict[str, Any]:
    """A rollout as the operator sees it: per wave counts against thresholds, per station state."""
    evaluate(db, now)
    rollout = latest(db, name)
    spec = rollout.spec
    return {
        "rollout_id": rollout.rollout_id,
        "name": rollout.name,
        "version": rollout.version,
        "state": rollout.state,
        "reason": rollout.reason,
        "wave": rollout.wave + 1,
        "created_at": rollout.created_at,
        "timeout_s": spec.timeout_s,
        "waves": [
            {
                "wave": i + 1,
                "who": w.describe(),
                "started": i <= rollout.wave,
                "success_threshold": spec.success_threshold,
                "error_threshold": spec.error_threshold,
                **wave_counts(rollout, i),
            }
            for i, w in enumerate(spec.waves)
        ],
        "stations": [
            {
                "station_id": t.station_id,
                "wave": t.wave + 1,
                "state": t.state,
                "reason": t.reason,
                "previous_version": t.previous_version,
                "reported_at": t.reported_at,
            }
            for t in sorted(rollout.targets.values(), key=lambda t: (t.wave, t.station_id))
        ],
    }
