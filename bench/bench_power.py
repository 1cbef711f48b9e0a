"""Idle cost of the station in NORMAL and in ECO: CPU seconds and wake-ups per idle minute.

    python bench/bench_power.py [--seconds 60]

Measured in one run, on this machine:
  raw       an idle Python process with as many threads, each asleep on an event: the floor
            any daemon of this shape pays;
  station   `fieldstation run` as its own process with a battery in a sysfs tree (temp dir),
            no units: first at 80 % (NORMAL), then at 30 % (ECO), each for --seconds;
  worker    the power worker's own share: CPU per read of the sources (in this process) times
            its reads per minute in each state.
Wake-ups are context switches summed over every thread (/proc/<pid>/task/*/status). Prints a table
and the ratios against the raw process (goal: < 0.3 CPU s/min in ECO).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.broker import free_port  # noqa: E402
from bench.figures import Figure, at_most  # noqa: E402


def wakeups(pid: int) -> int:
    """Voluntary and involuntary context switches of every thread of a process."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def measure(pid: int, seconds: float) -> dict[str, float]:
    proc = psutil.Process(pid)
    cpu0, w0 = sum(proc.cpu_times()[:2]), wakeups(pid)
    time.sleep(seconds)
    cpu1, w1 = sum(proc.cpu_times()[:2]), wakeups(pid)
    return {
        "cpu_s_per_min": (cpu1 - cpu0) * 60 / seconds,
        "wakeups_per_min": (w1 - w0) * 60 / seconds,
        "threads": proc.num_threads(),
    }


RAW = """
import threading, sys
stop = threading.Event()
for i in range(int(sys.argv[1]) - 1):
    threading.Thread(target=stop.wait, daemon=True).start()
print("ready", flush=True)
stop.wait()
"""


def raw_idle(threads: int, seconds: float) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, "-c", RAW, str(threads)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return measure(proc.pid, seconds)
    finally:
        proc.kill()
        proc.wait()


def write_battery(root: Path, soc: float) -> None:
    bat = root / "class" / "power_supply" / "BAT0"
    bat.mkdir(parents=True, exist_ok=True)
    (bat / "type").write_text("Battery\n")
    (bat / "capacity").write_text(f"{soc:.0f}\n")
    (bat / "voltage_now").write_text(f"{int((12.0 + 1.3 * soc / 100) * 1e6)}\n")
    (bat / "current_now").write_text("-400000\n")
    (bat / "status").write_text("Discharging\n")


def worker_share(folder: Path, reads: int = 200) -> dict[str, float]:
    """CPU seconds of one power worker read (sysfs source, judge, state, policy, metrics)."""
    import agent.power.history  # noqa: F401 - registers the power tables
    from agent.config import parse_config
    from agent.metrics import Metrics
    from agent.power.worker import PowerWorker
    from agent.store import Store

    sys_root = folder / "sys-worker"
    write_battery(sys_root, 80)
    section = parse_config(
        f'[power]\nsysfs_root = "{sys_root}"\nwake_command = []\n[[power.sources]]\nkind = "sysfs"\n'
    ).power
    store = Store(folder / "worker.db", check_on_start=False)
    worker = PowerWorker(section, store, Metrics())
    try:
        t0 = time.process_time()
        for _ in range(reads):
            worker.tick()
        per_read = (time.process_time() - t0) / reads
    finally:
        worker.close()
        store.close()
    normal_reads = 60 / section.read_interval_s
    eco_reads = normal_reads / section.low_read_factor
    return {
        "cpu_s_per_read": per_read,
        "normal_cpu_s_per_min": per_read * normal_reads,
        "eco_cpu_s_per_min": per_read * eco_reads,
        "normal_reads_per_min": normal_reads,
        "eco_reads_per_min": eco_reads,
    }


def measure_all(seconds: float, read_interval_s: float = 30.0) -> dict:
    """Every figure of one run: the station in NORMAL then ECO, the raw process, the worker."""
    with tempfile.TemporaryDirectory(prefix="bench-power-") as tmp:
        folder = Path(tmp)
        sys_root = folder / "sys"
        write_battery(sys_root, 80)
        listen = f"127.0.0.1:{free_port()}"
        conf = folder / "station.toml"
        conf.write_text(
            f'[station]\nid = "bench"\ndata_dir = "{folder / "data"}"\n'
            f'[http]\nlisten = "{listen}"\n[inference]\nenabled = false\n'
            f'[power]\nsysfs_root = "{sys_root}"\nmin_dwell_s = 0\nwake_command = []\n'
            f"read_interval_s = {read_interval_s}\n"
            '[[power.sources]]\nkind = "sysfs"\n'
        )
        log = open(folder / "daemon.log", "wb")  # noqa: SIM115 - the child keeps it
        daemon = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            state = wait_state(listen, "normal", 60)
            time.sleep(2)  # start-up work done
            normal = measure(daemon.pid, seconds)
            write_battery(sys_root, 30)
            state = wait_state(listen, "eco", 200)  # the next read (30 s in NORMAL) sees it
            time.sleep(2)
            eco = measure(daemon.pid, seconds)
        finally:
            daemon.terminate()
            daemon.wait(30)
            log.close()
        raw = raw_idle(int(normal["threads"]), seconds)
        share = worker_share(folder)
    return {
        "seconds": seconds,
        "raw": raw,
        "normal": normal,
        "eco": eco,
        "state_seen": state,
        "power_worker": share,
        "eco_cpu_above_raw": eco["cpu_s_per_min"] - raw["cpu_s_per_min"],
        "eco_wakeups_above_raw": eco["wakeups_per_min"] - raw["wakeups_per_min"],
    }


def run(quick: bool) -> list[Figure]:
    # quick: sources read every 5 s, not 30, so ECO comes sooner (0.2 ms a read: noise in s/min)
    r = measure_all(10.0, 5.0) if quick else measure_all(60.0)
    raw, share = r["raw"], r["power_worker"]
    base = f"idle Python process, {raw['threads']:.0f} threads asleep"
    out = [
        Figure(
            f"station idle CPU in {state.upper()}",
            r[state]["cpu_s_per_min"],
            "s/min",
            raw["cpu_s_per_min"],
            base,
            at_most(0.3, "value") if state == "eco" else None,
        )
        for state in ("normal", "eco")
    ]
    out += [
        Figure(
            f"station wake-ups per idle minute in {state.upper()}",
            r[state]["wakeups_per_min"],
            "/min",
            raw["wakeups_per_min"],
            base,
        )
        for state in ("normal", "eco")
    ]
    out.append(
        Figure(
            "power worker CPU per read of the sources",
            share["cpu_s_per_read"] * 1000,
            "ms",
            note=f"{share['normal_reads_per_min']:g} reads/min in NORMAL, "
            f"{share['eco_reads_per_min']:g} in ECO",
        )
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0, help="idle time measured per state")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = measure_all(args.seconds)
    raw, normal, eco, share = (
        results["raw"], results["normal"], results["eco"], results["power_worker"]
    )  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'idle process':<28} {'CPU s/min':>10} {'wake-ups/min':>13} {'threads':>8}")
    for name, r in (
        ("raw (threads asleep)", raw),
        ("station NORMAL", normal),
        ("station ECO", eco),
    ):
        print(
            f"{name:<28} {r['cpu_s_per_min']:>10.3f} {r['wakeups_per_min']:>13.0f} "
            f"{r['threads']:>8.0f}"
        )
    print(
        f"{'power worker alone NORMAL':<28} {share['normal_cpu_s_per_min']:>10.4f} "
        f"{share['normal_reads_per_min']:>13.1f}"
    )
    print(
        f"{'power worker alone ECO':<28} {share['eco_cpu_s_per_min']:>10.4f} "
        f"{share['eco_reads_per_min']:>13.1f}"
    )
    goal = "met" if eco["cpu_s_per_min"] < 0.3 else "NOT met"
    print(
        f"ECO above raw: +{eco['cpu_s_per_min'] - raw['cpu_s_per_min']:.3f} CPU s/min, "
        f"+{eco['wakeups_per_min'] - raw['wakeups_per_min']:.0f} wake-ups/min "
        f"(power worker: {share['cpu_s_per_read'] * 1000:.2f} ms per read); "
        f"goal < 0.3 CPU s/min in ECO: {goal}"
    )


def wait_state(listen: str, want: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        try:
            seen = requests.get(f"http://{listen}/api/power", timeout=2).json()["state"]
        except (requests.RequestException, ValueError, KeyError):
            seen = ""
        if seen == want:
            return seen
        time.sleep(0.5)
    raise RuntimeError(f"the station did not reach {want} in {timeout:.0f} s (last: {seen!r})")


if __name__ == "__main__":
    main()
