"""One station per buffer: a second `fieldstation run` on the same data folder refuses."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import requests

from tests.helpers import free_port, wait_for


def config_file(tmp_path: Path, name: str, data_dir: Path) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
[station]
id = "lock-test"
data_dir = "{data_dir}"

[http]
listen = "127.0.0.1:{free_port()}"

[inference]
enabled = false
"""
    )
    return path


def run(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def healthy(config: Path) -> bool:
    listen = config.read_text().split('listen = "')[1].split('"')[0]
    try:
        return requests.get(f"http://{listen}/healthz", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def test_second_station_on_the_same_buffer_refuses_naming_the_first_pid(tmp_path):
    data = tmp_path / "data"
    first_config, second_config = (config_file(tmp_path, n, data) for n in ("one", "two"))
    first = run(first_config)
    try:
        wait_for(lambda: healthy(first_config), 30, "the first station")
        second = run(second_config)
        _, err = second.communicate(timeout=30)
        assert second.returncode == 2
        assert f"pid {first.pid}" in err and str(data) in err
        assert healthy(first_config)  # the first one carries on untouched
        # SIGKILL leaves no stale lock: the kernel drops it with the process
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        third = run(second_config)
        try:
            wait_for(lambda: healthy(second_config), 30, "a station after the SIGKILL")
        finally:
            third.terminate()
            third.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate(timeout=10)
