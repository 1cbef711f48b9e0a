"""The daemon as a process: supervision, systemd notify, SIGTERM, SIGKILL durability, CLI views."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import requests

from agent.broker import free_port
from agent.esp32.units import virtual_unit
from agent.esp32.virtual import PtySerialLink
from agent.metrics import Metrics
from agent.scenes import scene_jpeg
from agent.store import Store
from agent.supervisor import Supervisor
from tests.helpers import context_switches, wait_for


class Flaky:
    name = "flaky"

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.runs = 0

    def run(self, stop: threading.Event) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError(f"crash number {self.runs}")
        stop.wait()


def test_crashed_worker_is_restarted_with_backoff_and_reported():
    metrics = Metrics()
    sup = Supervisor(metrics, backoff_initial_s=0.1, backoff_max_s=0.4)
    worker = Flaky(crashes=3)
    sup.add(worker)
    sup.start()
    try:
        wait_for(lambda: worker.runs == 4 and sup.healthy(), timeout=10, what="fourth run")
        status = sup.status()[0]
        assert status["restarts"] == 3 and "crash number 3" in status["last_error"]
        text = metrics.render().decode()
        assert 'fieldstation_worker_restarts_total{worker="flaky"} 3.0' in text
    finally:
        sup.stop()


class CrashOnCue:
    """Runs quietly until told to crash, then runs quietly again once restarted."""

    name = "on-cue"

    def __init__(self) -> None:
        self.cue = threading.Event()
        self.runs = 0

    def run(self, stop: threading.Event) -> None:
        self.runs += 1
        if self.runs == 1:
            while not self.cue.wait(0.05):
                if stop.is_set():
                    return
            raise RuntimeError("crashed on cue")
        stop.wait()


def test_the_supervisor_sleeps_while_all_is_well_and_wakes_for_a_crash():
    sup = Supervisor(Metrics(), backoff_initial_s=0.1)
    worker = CrashOnCue()
    sup.add(worker)
    others = set(threading.enumerate())
    sup.start()
    try:
        (monitor,) = [
            t for t in threading.enumerate() if t.name == "supervisor" and t not in others
        ]
        time.sleep(0.2)
        before = context_switches(monitor)
        time.sleep(1.5)  # a poll every 0.5 s would wake it three times here
        assert context_switches(monitor) - before <= 1
        worker.cue.set()  # a crash long after the start: the monitor wakes for it
        wait_for(lambda: worker.runs == 2 and sup.healthy(), timeout=5, what="the restart")
        assert sup.status()[0]["restarts"] == 1
    finally:
        sup.stop()


def _start_daemon(tmp_path: Path, extra: str = "", env_extra: dict | None = None):
    port = free_port()
    cfg = tmp_path / "station.toml"
    cfg.write_text(
        f'[station]\nid = "proc-station"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\n{extra}'
    )
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return requests.get(f"{url}/readyz", timeout=1).status_code == 200
        except requests.ConnectionError:
            assert proc.poll() is None, proc.stdout.read().decode()
            return False

    wait_for(ready, timeout=30, what="daemon ready")
    return proc, url, cfg


def test_systemd_notify_ready_watchdog_and_clean_sigterm(tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    proc, url, _ = _start_daemon(
        tmp_path, env_extra={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}
    )
    try:
        messages = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("WATCHDOG=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert any("READY=1" in m for m in messages)
        assert any("WATCHDOG=1" in m for m in messages)
        assert requests.get(f"{url}/healthz", timeout=5).text == "ok\n"
        assert "fieldstation_queue_captures" in requests.get(f"{url}/metrics", timeout=5).text
        status = requests.get(f"{url}/api/status", timeout=5).json()
        assert status["station_id"] == "proc-station" and status["workers"]
        shown = subprocess.run(
            [sys.executable, "-m", "agent", "status", "--config", str(tmp_path / "station.toml")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert "daemon    running" in shown.stdout and "workers up" in shown.stdout
        assert "upload    off" in shown.stdout and "inference none" in shown.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        rest = []
        sock.settimeout(2)
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        assert any("STOPPING=1" in m for m in rest)
        assert b"stopped cleanly" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_sigkill_mid_stream_loses_no_acknowledged_capture(tmp_path):
    master, slave = os.openpty()
    tty.setraw(slave)
    port_path = os.ttyname(slave)
    extra = f'[serial]\nports = ["{port_path}"]\nreopen_s = 0.2\n'
    proc, url, cfg = _start_daemon(tmp_path, extra)
    unit = virtual_unit(
        "cam-kill", PtySerialLink(master), chunk_size=2048, ack_timeout_s=2, max_attempts=1
    )
    acked: dict[str, str] = {}
    killed = threading.Event()

    def stream() -> None:
        for i in range(400):
            jpeg = scene_jpeg(i % 7, (320, 240))
            result = unit.send_capture(jpeg)
            if result.acked:
                acked[str(result.capture_id)] = hashlib.sha256(jpeg).hexdigest()
            if killed.is_set():
                return

    sender = threading.Thread(target=stream)
    sender.start()
    wait_for(lambda: len(acked) >= 15, timeout=60, what="captures acked before the kill")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    killed.set()
    sender.join(30)
    assert len(acked) >= 15
    # restart on the same buffer, then look as an operator would
    proc2, _url, cfg = _start_daemon(tmp_path, extra)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "agent", "queue", "--json", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["per_unit"]["cam-kill"]["count"] >= len(acked)
    finally:
        proc2.send_signal(signal.SIGTERM)
        proc2.wait(30)
    store = Store(tmp_path / "data" / "buffer.db")
    with store.read() as conn:
        rows = {
            r["unit_ref"]: r["sha256"]
            for r in conn.execute(
                "SELECT unit_ref, sha256 FROM captures WHERE unit_id = 'cam-kill'"
            )
        }
    missing = {ref for ref in acked if rows.get(ref) != acked[ref]}
    assert not missing, f"acknowledged but lost: {sorted(missing)}"
    with store.read() as conn:  # and every stored one is whole
        all_rows = conn.execute("SELECT id, sha256 FROM captures").fetchall()
    for row in all_rows:
        assert hashlib.sha256(store.read_image(row["id"])).hexdigest() == row["sha256"]
    os.close(master)
    os.close(slave)


def test_status_and_queue_commands_read_the_buffer(tmp_path):
    store = Store(tmp_path / "buffer.db")
    from agent.capture import Capture

    store.add_capture(Capture("unit-a", "1", "serial", scene_jpeg(1, (64, 64)), time.time() - 3600))
    store.add_capture(Capture("unit-b", "1", "mqtt", scene_jpeg(2, (64, 64)), time.time()))
    store.close()
    cmd = [sys.executable, "-m", "agent"]
    q = subprocess.run(
        [*cmd, "queue", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert q.returncode == 0, q.stderr
    assert (
        "received" in q.stdout and "unit-a" in q.stdout and "oldest pending: unit-a-1-" in q.stdout
    )
    s = subprocess.run(
        [
            *cmd,
            "status",
            "--json",
            "--data-dir",
            str(tmp_path),
            "--http",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    doc = json.loads(s.stdout)
    assert doc["queue"]["pending"] == 2 and doc["daemon"] is None
    assert {u["unit_id"] for u in doc["units"]} == {"unit-a", "unit-b"}


def test_demo_runs_the_whole_chain_and_ends_with_json():
    r = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--captures", "6", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout)  # only JSON on stdout; the progress went to stderr
    assert "summary" in r.stderr and "INFO: Created TensorFlow Lite" not in r.stderr
    # the folder is gone when the summary is read: it says so instead of showing its path
    assert "in the data folder (deleted at exit; --keep keeps it)" in r.stderr
    assert summary["captures_acknowledged"] == 6 and summary["all_stored"]
    assert summary["by_path"]["serial"]["in_buffer"] >= 2
    assert summary["cloud"]["captures"] == 6 and summary["all_uploaded"]
    assert summary["detections"]["animal"] >= 1  # the demo detector ran on the frames


def test_demo_needs_no_broker():
    env = {
        **os.environ,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }  # Debian's mosquitto is in /usr/sbin
    r = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--captures", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mqtt          off" in r.stderr
    summary = json.loads(r.stdout)
    assert summary["mqtt"] is False and summary["all_stored"]
    assert set(summary["by_path"]) == {"serial", "http"}
