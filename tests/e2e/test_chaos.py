"""The whole chain under chaos: units over serial, MQTT and HTTP into a station daemon that is
SIGKILLed, starved of disk, given a damaged buffer and a dying broker, while its three clouds stop,
slow down, fail, go silent and lose their links, its battery runs through ECO and back, and a
model rollout fails its probation. After the drain every acknowledged capture is in a cloud.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from agent.broker import PrivateBroker, free_port
from agent.modelsync import artifact as art
from agent.scenes import scene_jpeg
from tests.e2e.chain import (
    NAMES,
    Battery,
    CloudNode,
    Fleet,
    StationProcess,
    Tally,
    battery_curve,
    broker_restart,
    http_sender,
    start_clouds,
    station_toml,
)
from tests.e2e.report import Report
from tests.helpers import tmpfs, wait_for
from tests.rollout.conftest import make_version
from tests.rollout.fleet import ANIMAL_SEEDS, scene

STATION = "e2e-station"
MODEL = "wildcam-det"
CLOUD_FAULTS = ("stop", "slow", "fail", "blackhole", "cut")


def model_toml(sys_root: Path, public: str) -> str:
    return f"""
[storage]
quota_bytes = 4000000  # filled while ECO holds uploads back: eviction and its alarm run
min_free_bytes = 2000000
reserve_bytes = 1000000
evict_interval_s = 5

[inference]
enabled = true
poll_interval_s = 0.1
reload_interval_s = 1
threads = 1

[modelsync]
enabled = true
model = "{MODEL}"
endpoint = "aws"
trusted_keys = ["{public}"]
poll_interval_s = 0.5
shadow_captures = 6
probation_s = 600
probation_min_captures = 4
download_deadline_s = 30

[power]
sysfs_root = "{sys_root}"
read_interval_s = 1
low_read_factor = 1
min_dwell_s = 2
charging_dwell_s = 0
max_soc_rate_per_h = 1000000
wake_command = []
[[power.sources]]
kind = "sysfs"
"""


class Chaos:
    """The scripted faults; each `start_*` has its `end_*`, and `heal` undoes whatever is left."""

    def __init__(
        self,
        clouds: dict[str, CloudNode],
        station: StationProcess,
        broker: PrivateBroker,
        disk: Path,
        report: Report,
        t0: float,
    ) -> None:
        self.clouds = clouds
        self.station = station
        self.broker = broker
        self.disk = disk
        self.report = report
        self.t0 = t0
        self.faulted: dict[str, str] = {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def kill_station(self, damage: bool) -> None:
        self.station.kill()
        detail: dict[str, Any] = {}
        if damage:
            detail = damage_buffer(self.disk / "station")
        self.report.inject(
            self.now(), "station SIGKILL" + (" + damaged buffer" if damage else ""), **detail
        )
        self.station.start()

    def cloud_fault(self, name: str, kind: str) -> None:
        cloud = self.clouds[name]
        assert cloud.proxy is not None
        if name in self.faulted:
            return
        self.faulted[name] = kind
        if kind == "stop":
            cloud.stop()
        elif kind == "slow":
            cloud.proxy.set("delay", delay_s=0.4)
        elif kind == "fail":
            cloud.proxy.set("error500")
        elif kind == "blackhole":
            cloud.pause()
        elif kind == "cut":
            if cloud.link.real:
                cloud.link.cut()
            else:
                cloud.proxy.set("down")
        self.report.inject(
            self.now(),
            f"cloud {kind}",
            cloud=name,
            real_link=cloud.link.real if kind == "cut" else None,
        )

    def cloud_heal(self, name: str) -> None:
        kind = self.faulted.pop(name, None)
        if kind is None:
            return
        cloud = self.clouds[name]
        assert cloud.proxy is not None
        if kind == "stop":
            cloud.start()
        elif kind == "blackhole":
            cloud.resume()
        elif kind == "cut" and cloud.link.real:
            cloud.link.restore()
        cloud.proxy.set("pass")

    def broker_outage(self, seconds: float) -> None:
        port = self.broker.port
        if self.broker.proc is not None:
            self.broker.proc.kill()
            self.broker.proc.wait(10)
        self.report.inject(self.now(), "broker SIGKILL", port=port, outage_s=seconds)
        time.sleep(seconds)
        self.broker = broker_restart(self.broker)

    def fill_disk(self) -> None:
        ballast = self.disk / "ballast"
        free = os.statvfs(self.disk).f_bavail * os.statvfs(self.disk).f_frsize
        size = max(0, free - 64 * 1024)
        with ballast.open("wb") as f:
            os.posix_fallocate(f.fileno(), 0, size)
        self.report.inject(self.now(), "disk full", ballast_bytes=size)

    def heal(self) -> None:
        for name in list(self.faulted):
            self.cloud_heal(name)
        (self.disk / "ballast").unlink(missing_ok=True)


def damage_buffer(data: Path) -> dict[str, Any]:
    """Between two runs: a torn write at the end of the WAL and a scribbled WAL index — what a
    power cut mid-write leaves. Committed frames are left alone (their loss is salvage's test);
    what the station's WAL check makes of the files is recorded."""
    from agent.walcheck import check_wal

    rnd = random.Random(7)
    wal, shm = data / "buffer.db-wal", data / "buffer.db-shm"
    out: dict[str, Any] = {}
    if wal.exists():
        with wal.open("ab") as f:
            f.write(rnd.randbytes(3000))
        out["wal_torn_bytes"] = 3000
    if shm.exists() and shm.stat().st_size > 200:
        with shm.open("r+b") as f:
            f.seek(120)
            f.write(rnd.randbytes(64))
        out["shm_scribbled_bytes"] = 64
    try:
        found = check_wal(wal, shm)
    except Exception as exc:  # the verdict is an observation, not this test's subject
        out["walcheck"] = f"{type(exc).__name__}: {exc}"
    else:
        if found is not None:
            out["walcheck"] = {
                "damaged": found.damaged,
                "frames": found.frames,
                "replayed": found.replayed,
                "frames_lost": found.frames_lost,
            }
    return out


def post_rollout(cloud: CloudNode, version: str, waves: list[dict[str, Any]]) -> None:
    r = requests.post(
        cloud.direct_url + "/v1/rollouts",
        json={"name": MODEL, "version": version, "waves": waves, "timeout_s": 600},
        headers={"Authorization": f"Bearer {cloud.admin}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def rollout_doc(cloud: CloudNode) -> dict[str, Any]:
    r = requests.get(
        cloud.direct_url + f"/v1/rollouts/{MODEL}",
        headers={"Authorization": f"Bearer {cloud.admin}"},
        timeout=10,
    )
    r.raise_for_status()
    return r.json()


def model_status(station: StationProcess) -> dict[str, Any]:
    st = station.status() or {}
    return st.get("modelsync") or {}


def buffer_rows(
    db: Path,
) -> tuple[dict[str, str], list[tuple[str, str, str | None, int, str | None]]]:
    """(capture id -> state, deliveries) read from the stopped station's buffer, read-only; an
    empty frame evicted before upload (the full-disk policy) reads as state 'evicted-empty'."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        states = {
            cid: "evicted-empty" if state == "evicted" and empty == 1 else state
            for cid, state, empty in conn.execute("SELECT id, state, empty FROM captures")
        }
        deliveries = conn.execute(
            "SELECT capture_id, endpoint, held_variant, via_lookup, doubt_variant "
            "FROM upload_deliveries"
        ).fetchall()
    finally:
        conn.close()
    return states, deliveries


def worker_restarts_without_cause(log: str) -> list[str]:
    """Restarts the supervisor made with no crash line (and its cause) before them in that run."""
    bad: list[str] = []
    for run in log.split("=== run ")[1:]:
        crashed: dict[str, int] = {}
        for line in run.splitlines():
            if "worker " in line and " crashed (" in line:
                name = line.split("worker ", 1)[1].split(" ", 1)[0]
                crashed[name] = crashed.get(name, 0) + 1
            elif "restarting worker " in line:
                name = line.split("restarting worker ", 1)[1].strip()
                if crashed.get(name, 0) <= 0:
                    bad.append(line.strip())
                else:
                    crashed[name] -= 1
    return bad


def crash_causes(log: str) -> list[str]:
    return [ln.strip()[-200:] for ln in log.splitlines() if " crashed (" in ln]


def alarms_raised(log: str) -> dict[str, int]:
    """Buffer alarms the station raised over all runs (`alarm KIND: why` lines), by kind."""
    out: dict[str, int] = {}
    for line in log.splitlines():
        if " alarm " in line and not line.rstrip().endswith("cleared"):
            kind = line.split(" alarm ", 1)[1].split(":", 1)[0].strip()
            out[kind] = out.get(kind, 0) + 1
    return out


def test_every_acknowledged_capture_reaches_a_cloud_through_chaos(
    tmp_path, cloud_links, chaos_minutes, seed, report_dir
):
    rnd = random.Random(seed)
    report = Report("chaos", seed)
    links, how = cloud_links
    report.observed["links"] = how
    if not next(iter(links.values())).real:
        report.notes.append(f"link cuts fell back to the loopback proxy: {how}")
    clouds = start_clouds(tmp_path / "clouds", links, STATION)
    broker: PrivateBroker | None = None
    station: StationProcess | None = None
    fleet: Fleet | None = None
    chaos: Chaos | None = None
    rows: Any = None
    final_model: dict[str, Any] = {}
    final_status: dict[str, Any] = {}
    doc: dict[str, Any] = {}
    try:
        key = tmp_path / "signing.key"
        _, public = art.generate_key(key)
        for version, base in (("1.0.0", "scene-animal"), ("4.0.0", "blob-yolo-cn")):
            pkg = make_version(tmp_path / "pkgs", version, base=base, name=MODEL)
            clouds["aws"].cli("models", "publish", str(pkg), "--sign-key", str(key))
        broker = PrivateBroker().start()
        battery = Battery(tmp_path / "sys")
        images = [scene_jpeg(s, (320, 240)) for s in ANIMAL_SEEDS]
        tally = Tally()
        with tmpfs(tmp_path / "disk", "192m") as disk:
            fleet = Fleet(STATION, tally, lambda n: images[n % len(images)])
            http_port = free_port()
            config = tmp_path / "station.toml"
            config.write_text(
                station_toml(
                    STATION,
                    disk / "station",
                    http_port,
                    clouds,
                    serial_ports=fleet.serial_ports,
                    broker_port=broker.port,
                    extra=model_toml(tmp_path / "sys", public),
                )
            )
            station = StationProcess(config, http_port, tmp_path / "station.log")
            station.start()
            post_rollout(clouds["aws"], "1.0.0", [{"percent": 100}])
            wait_for(lambda: model_status(station).get("active") == "1.0.0", 90, "v1 active")

            interval = 0.8  # per unit: five units, about six captures a second in all
            fleet.start(station.base, broker, interval, seed)
            chaos = Chaos(clouds, station, broker, disk, report, time.monotonic())
            chaos_s = 60.0 * chaos_minutes
            plan = schedule(rnd, chaos_s, chaos)
            ecos: set[str] = set()
            while (t := chaos.now()) < chaos_s:
                soc, charging = battery_curve(t / chaos_s)
                if abs(soc - battery.soc) >= 1 or charging != battery.charging:
                    battery.set(soc, charging=charging)
                st = station.metric("fieldstation_power_state", state="eco")
                if st == 1:
                    ecos.add("eco")
                elif st == 0 and "eco" in ecos:
                    ecos.add("normal again")
                while plan and plan[0][0] <= t:
                    _, _, action = plan.pop(0)
                    action()
                time.sleep(0.25)
            for _, _, action in plan:  # a late end-of-fault still runs
                action()
            chaos.heal()
            broker = chaos.broker
            report.observed["power"] = sorted(ecos)
            battery.set(80, charging=True)
            wait_for(
                lambda: station.metric("fieldstation_power_state", state="normal") == 1,
                30,
                "power NORMAL again",
            )

            # a model rolled out mid-stream: its one wave passes self-test and shadow, then fails
            # probation (blob-yolo-cn finds the bright square, not the animals) and rolls back
            fleet.pause(60)
            blob = http_sender(station.base, "c0ffee02", tally)
            for i, s in enumerate(ANIMAL_SEEDS[:8]):
                cid = wait_for(lambda s=s, i=i: blob(scene(s, blob=True), i), 30, "blob capture")
                tally.ack(cid, "c0ffee02")
                tally.sent += 1
            wait_for(lambda: _in_state(station, "received") == 0, 60, "blob scenes analysed")
            # one station, so one wave: its probation failing is what pauses the rollout
            post_rollout(clouds["aws"], "4.0.0", [{"stations": [STATION]}])
            report.inject(chaos.now(), "model rollout", version="4.0.0", waves=1)
            wait_for(lambda: model_status(station).get("active") == "4.0.0", 90, "v4 active")
            fleet.resume()
            wait_for(lambda: model_status(station).get("active") == "1.0.0", 90, "v4 rolled back")
            doc = wait_for(
                lambda: (d := rollout_doc(clouds["aws"]))["state"] == "paused" and d,
                30,
                "rollout paused at the cloud",
            )
            time.sleep(3)  # a little more traffic on the restored model

            # drain: units stop once all they hold is acknowledged, then the backlog empties
            fleet.stop(60)
            drain_t0 = time.monotonic()
            wait_for(lambda: _drained(station), 120, "backlog drained")
            report.observed["drain_s"] = round(time.monotonic() - drain_t0, 1)
            final_model = model_status(station)
            final_status = station.status() or {}
            assert station.stop() == 0, station.tail()
            rows = buffer_rows(disk / "station" / "buffer.db")  # before the tmpfs goes
    except Exception as exc:
        report.notes.append(f"run stopped early: {type(exc).__name__}: {exc}"[:600])
        for c in clouds.values():
            c.close()
        report.write(report_dir)
        raise
    finally:
        if fleet is not None:
            fleet.stop(5)
        if station is not None and station.running():
            station.kill()
        if chaos is not None:
            chaos.heal()
            broker = chaos.broker
        if broker is not None:
            broker.stop()
        for c in clouds.values():
            c.resume()
    try:
        states, deliveries = rows
        observe_and_check(
            report, tally, states, deliveries, clouds, station, final_model, final_status, doc
        )
    finally:
        for c in clouds.values():
            c.close()
        report.write(report_dir)
    failed = [k for k, ok in report.checks.items() if not ok]
    assert not failed, f"{failed}; see {report_dir}/chaos.md"


def _in_state(station: StationProcess, state: str) -> int:
    st = station.status()
    if not st:
        return -1
    return int(st["queue"]["by_state"][state]["count"])


def _drained(station: StationProcess) -> bool:
    st = station.status()
    if not st or not st.get("upload"):
        return False
    q = st["queue"]["by_state"]
    return (
        q["received"]["count"] == 0
        and q["analysed"]["count"] == 0
        and st["upload"]["backlog"]["captures"] == 0
        and not any(station.metric("fieldstation_upload_in_doubt", endpoint=n) for n in NAMES)
    )


def schedule(
    rnd: random.Random, chaos_s: float, chaos: Chaos
) -> list[tuple[float, int, Callable[[], None]]]:
    """Seeded times for every fault, with the end of each; sorted by time. A CI run (one minute)
    gets three station kills and one of each other fault; longer runs get more of each."""
    plan: list[tuple[float, int, Callable[[], None]]] = []
    minutes = chaos_s / 60

    def at(lo: float, hi: float) -> float:
        return chaos_s * rnd.uniform(lo, hi)

    kills = sorted(at(0.1, 0.85) for _ in range(max(3, round(2 * minutes))))
    damaged = set(rnd.sample(range(len(kills)), max(1, len(kills) // 3)))
    for i, t in enumerate(kills):
        plan.append((t, len(plan), lambda d=i in damaged: chaos.kill_station(d)))
    # each kind of cloud fault once per round, each in its own slot (so none is skipped)
    kinds = [k for _ in range(max(1, round(minutes))) for k in CLOUD_FAULTS]
    rnd.shuffle(kinds)
    slot = 0.8 * chaos_s / len(kinds)
    for i, kind in enumerate(kinds):
        name = rnd.choice(NAMES)
        t = 0.05 * chaos_s + i * slot + rnd.uniform(0, 0.2) * slot
        end = t + min(0.75 * slot, rnd.uniform(3, 8))
        plan.append((t, len(plan), lambda n=name, k=kind: chaos.cloud_fault(n, k)))
        plan.append((end, len(plan), lambda n=name: chaos.cloud_heal(n)))
    for _ in range(max(1, round(minutes / 2))):
        plan.append((at(0.2, 0.7), len(plan), lambda: chaos.broker_outage(2.0)))
    for _ in range(max(1, round(minutes / 3))):
        t = at(0.3, 0.8)
        plan.append((t, len(plan), chaos.fill_disk))
        plan.append((t + 5, len(plan), lambda: (chaos.disk / "ballast").unlink(missing_ok=True)))
    plan.sort(key=lambda e: (e[0], e[1]))
    return plan


def observe_and_check(
    report: Report,
    tally: Tally,
    states: dict[str, str],
    deliveries: list[tuple[str, str, str | None, int, str | None]],
    clouds: dict[str, CloudNode],
    station: StationProcess | None,
    final_model: dict[str, Any],
    final_status: dict[str, Any],
    doc: dict[str, Any],
) -> None:
    ids = sorted(states)
    acked = set(tally.acked)
    held_cloud: dict[str, set[str]] = {}
    dupes: dict[str, int] = {}
    agree: dict[str, bool] = {}
    held_station: dict[str, set[str]] = {n: set() for n in NAMES}
    for cid, endpoint, held, _via, _doubt in deliveries:
        if held is not None:
            held_station[endpoint].add(cid)
    for name, cloud in clouds.items():
        records = cloud.records(STATION)
        rec_ids = [r["capture_id"] for r in records]
        dupes[name] = len(rec_ids) - len(set(rec_ids))
        held_cloud[name] = set(cloud.lookup(STATION, ids)) if ids else set()
        agree[name] = held_cloud[name] == held_station[name] == set(rec_ids)
    in_any = set().union(*held_cloud.values())
    counts = {n: sum(1 for s in states.values() if s == n) for n in set(states.values())}
    twice_not_doubt = sorted(
        cid
        for cid in ids
        if sum(1 for d in deliveries if d[0] == cid and d[2] is not None and d[3] == 0) > 1
    )
    log = station.log.read_text(errors="replace") if station else ""
    unexplained = worker_restarts_without_cause(log)
    report.observed.update(
        {
            "captures_units_acknowledged": len(acked),
            "captures_units_sent": tally.sent,
            "unit_retries": tally.retries,
            "unit_refusals": tally.refused,
            "captures_in_station": len(ids),
            "station_states": counts,
            "captures_in_any_cloud": len(in_any),
            "per_cloud": {n: len(h) for n, h in held_cloud.items()},
            "in_two_or_more_clouds": sum(
                1 for c in in_any if sum(c in h for h in held_cloud.values()) > 1
            ),
            "station_runs": station.runs if station else 0,
            "station_sigkills": station.kills if station else 0,
            "worker_crashes": crash_causes(log),
            "alarms_raised": alarms_raised(log),
            "model_active": final_model.get("active"),
            "model_refused": final_model.get("refused"),
            "rollout_state": doc.get("state"),
            "rollout_stations": [(s["station_id"], s["state"]) for s in doc.get("stations", [])],
            "alarms": [a.get("kind") for a in final_status.get("alarms", [])],
        }
    )
    report.check("every acknowledged capture is in the station", acked <= set(ids))
    # an empty frame evicted unsent on a full disk is the buffer's documented choice, not a loss
    dropped_empty = {c for c, st in states.items() if st == "evicted-empty"} - in_any
    report.observed["empty_frames_evicted_unsent"] = len(dropped_empty)
    report.check("every acknowledged capture is in a cloud", acked - dropped_empty <= in_any)
    report.check("every stored capture is in a cloud", set(ids) - dropped_empty <= in_any)
    report.check("at most one copy per cloud", not any(dupes.values()))
    report.check("station ledger and clouds agree", all(agree.values()))
    report.check("a second cloud's copy only from a batch in doubt", not twice_not_doubt)
    report.check("nothing left in doubt", not any(d[4] for d in deliveries))
    report.check("units' and station's counts agree", len(acked) == len(ids))
    report.check("no worker restarted without a cause in the log", not unexplained)
    report.check("station killed at least three times", bool(station and station.kills >= 3))
    refused = (final_model.get("refused") or {}).get("4.0.0", {})
    report.check(
        "model state is what the rollout says",
        final_model.get("active") == "1.0.0"
        and refused.get("state") == "rolled_back"
        and doc.get("state") == "paused"
        and {s["station_id"]: s["state"] for s in doc.get("stations", [])}.get(STATION)
        == "rolled_back",
    )
    if unexplained:
        report.notes.append(f"unexplained restarts: {unexplained[:5]}")
