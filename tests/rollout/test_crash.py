"""SIGKILL during activation: the pointer is the old or the new version, never a mix, and the
station comes back with a working model."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import requests

from agent.modelsync.verify import open_package
from agent.modelsync.versions import ModelVersions
from tests.helpers import wait_for

from . import fleet
from .conftest import NAME, make_version

SWITCHER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent.modelsync.versions import ModelVersions
    v = ModelVersions(Path(sys.argv[1]), sys.argv[2])
    print("ready", flush=True)
    while True:
        for version in ("1.0.0", "2.0.0"):
            v.switch(version, how="manual")
    """
)


def test_sigkill_while_switching_leaves_old_or_new_never_a_mix(tmp_path):
    versions = ModelVersions(tmp_path, NAME)
    for v in ("1.0.0", "2.0.0"):
        versions.install(make_version(tmp_path / "pkgs", v), v)
    rnd = random.Random(12)
    seen = set()
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", SWITCHER, str(tmp_path), NAME],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0.01, 0.2))
        child.send_signal(signal.SIGKILL)
        child.wait()
        pointer = versions.pointer()
        assert pointer is not None and pointer.version in ("1.0.0", "2.0.0")
        seen.add(pointer.version)
        folder = versions.active_folder()
        assert folder is not None and open_package(folder).card.version == pointer.version
        assert set(versions.installed()) == {"1.0.0", "2.0.0"}  # the previous stays on disk
    assert seen == {"1.0.0", "2.0.0"}


def _run(config_path, log):
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config_path)],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def _status(listen: str) -> dict | None:
    try:
        return requests.get(f"http://{listen}/api/status", timeout=2).json()
    except (requests.RequestException, ValueError):
        return None


def test_sigkill_of_a_station_during_an_update_leaves_a_working_model(
    tmp_path, cloud, operator, keypair
):
    key, public = keypair
    for v in ("1.0.0", "2.0.0"):
        operator.publish(make_version(tmp_path / "pkgs", v), key)
    token = operator.station_token("cliff")
    toml = fleet.station_toml(tmp_path / "cliff", "cliff", cloud, token, [public])
    config = tmp_path / "station.toml"
    config.write_text(toml)
    listen = toml.split('listen = "')[1].split('"')[0]
    admin = operator.admin_token()
    fleet.rollout(cloud, admin, "1.0.0", [{"percent": 100}])
    with (tmp_path / "station.log").open("ab") as log:
        station = _run(config, log)
        try:
            wait_for(
                lambda: (s := _status(listen)) and (s["modelsync"] or {}).get("active") == "1.0.0",
                60,
                "v1",
            )
            fleet.rollout(cloud, admin, "2.0.0", [{"percent": 100}])
            # kill it while it checks and switches to v2
            wait_for(
                lambda: (s := _status(listen)) and (s["modelsync"]["job"] or {}).get("state") in ("verifying", "shadow", "active"),
                60, "v2 under way",
            )  # fmt: skip
            station.send_signal(signal.SIGKILL)
            station.wait()
            versions = ModelVersions(tmp_path / "cliff", NAME)
            assert versions.pointer().version in ("1.0.0", "2.0.0")
            station = _run(config, log)
            wait_for(
                lambda: (s := _status(listen)) and (s["modelsync"] or {}).get("active") == "2.0.0",
                60,
                "v2 after restart",
            )
            jpeg = fleet.scene(fleet.ANIMAL_SEEDS[0])
            r = requests.post(
                f"http://{listen}/api/detections",
                files={"metadata": (None, '{"device_id": "ca7e", "timestamp": 1}'),
                       "image": ("a.jpg", jpeg, "image/jpeg")},
                timeout=10,
            )  # fmt: skip
            assert r.status_code == 201
            inf = wait_for(
                lambda: (
                    (s := _status(listen))
                    and s["inference"]["counts"]["analysed"]
                    and s["inference"]
                ),
                30,
            )
            assert inf["models"] == [f"{NAME}@2.0.0"]
        finally:
            station.send_signal(signal.SIGTERM)
            try:
                station.wait(20)
            except subprocess.TimeoutExpired:
                station.kill()
                station.wait()
