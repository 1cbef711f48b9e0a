"""The systemd units as systemd itself reads them: verify, security exposure, and what they forbid."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from agent.cli import build_parser
from agent.install import UNIT_BIN_DIR, Installer
from tests.helpers import free_port, jpeg, wait_for

ROOT = Path(__file__).parents[2]
SYSTEMD = ROOT / "systemd"
UNITS = ["fieldstation.service", "fieldstation-cloud.service"]
EXPOSURE_GOAL = 2.0


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail(
            "systemd-analyze missing: install Debian's `systemd` (bash .ci/setup.d/deploy.sh)"
        )
    return found


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree systemd-analyze can load units from: the host's unit library, the venv's commands."""
    root = tmp_path_factory.mktemp("root")
    library = Path("/usr/lib/systemd/system")
    if not (library / "sysinit.target").exists():
        pytest.fail(f"{library} has no sysinit.target: install Debian's `systemd` package")
    shutil.copytree(library, root / "usr/lib/systemd/system", symlinks=True)
    bindir = root / UNIT_BIN_DIR.lstrip("/")
    bindir.mkdir(parents=True)
    for command in ("fieldstation", "fieldstation-cloud"):
        (bindir / command).write_text("#!/bin/sh\n")
        (bindir / command).chmod(0o755)
    Installer(root, bin_dir=Path(UNIT_BIN_DIR), out=lambda _line: None).install()
    shutil.copy(SYSTEMD / "fieldstation-cloud.service", root / "etc/systemd/system")
    return root


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_without_a_single_warning(unit_root: Path, unit: str) -> None:
    done = subprocess.run(
        [systemd_analyze(), "verify", f"--root={unit_root}", unit],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify prints unknown keys and bad values on stderr and still exits 0
    assert done.returncode == 0 and done.stderr == "", done.stderr


def _security(unit_root: Path, unit: str) -> tuple[float, list[str]]:
    done = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", f"--root={unit_root}", unit],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    failed = [m.group(1) for m in re.finditer(r"^✗ (\w+)=", done.stdout, re.MULTILINE)]
    return float(match.group(1)), failed


@pytest.mark.parametrize("unit", UNITS)
def test_exposure_is_at_most_the_goal(unit_root: Path, unit: str) -> None:
    exposure, _failed = _security(unit_root, unit)
    assert exposure <= EXPOSURE_GOAL


@pytest.mark.parametrize("unit", UNITS)
def test_every_setting_not_taken_is_explained_in_the_unit(unit_root: Path, unit: str) -> None:
    _exposure, failed = _security(unit_root, unit)
    comments = [line for line in (SYSTEMD / unit).read_text().splitlines() if line.startswith("#")]
    unexplained = [name for name in failed if not any(f"{name}=" in c for c in comments)]
    assert failed and not unexplained


def test_station_unit_is_notify_with_watchdog_and_a_real_command() -> None:
    unit = (SYSTEMD / "fieldstation.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    args = build_parser().parse_args(exec_start.split()[1:])
    assert args.command == "run" and str(args.config) == "/etc/fieldstation/station.toml"


def test_cloud_unit_runs_a_real_command() -> None:
    from cloud.cli import build_parser as cloud_parser

    unit = (SYSTEMD / "fieldstation-cloud.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    args = cloud_parser().parse_args(exec_start.split()[1:])
    assert args.command == "serve"


# prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN): the kernel's MemoryDenyWriteExecute (Linux 6.3+).
MDWE_INFER = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    print("NO-MDWE", ctypes.get_errno()); sys.exit(3)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("W+X mapping was allowed"); sys.exit(4)
except PermissionError:
    pass
from agent.cli import main
sys.exit(main(["infer", sys.argv[1], "--model", sys.argv[2], "--json", "--threads", "2"]))
"""


def test_litert_inference_runs_with_memory_deny_write_execute(tmp_path: Path) -> None:
    image = tmp_path / "frame.jpg"
    image.write_bytes(jpeg(7, (320, 240)))
    model = ROOT / "models" / "fixtures" / "scene-animal"
    done = subprocess.run(
        [sys.executable, "-c", MDWE_INFER, str(image), str(model)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if done.returncode == 3:
        pytest.skip(f"kernel {os.uname().release} has no PR_SET_MDWE (Linux 6.3+)")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["timings_ms"]["invoke"] > 0 and isinstance(result["detections"], list)


MDWE_RUN = """
import ctypes, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(3)
from agent.cli import main
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_the_daemon_runs_and_analyses_captures_with_memory_deny_write_execute(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = tmp_path / "station.toml"
    config.write_text(
        f'[station]\nid = "mdwe"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\n'
        f'[inference]\ndetector = "{ROOT / "models" / "fixtures" / "scene-animal"}"\n'
    )
    daemon = subprocess.Popen(
        [sys.executable, "-c", MDWE_RUN, str(config)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if daemon.poll() is not None:
                if daemon.returncode == 3:
                    pytest.skip(f"kernel {os.uname().release} has no PR_SET_MDWE (Linux 6.3+)")
                raise AssertionError(daemon.stdout.read().decode() if daemon.stdout else "")
            try:
                return requests.get(f"{url}/readyz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, 60, "the daemon ready under MDWE")
        meta = {"device_id": "a1b2c3", "timestamp": int(time.time())}
        files = {
            "metadata": (None, json.dumps(meta)),
            "image": ("c.jpg", jpeg(3, (320, 240)), "image/jpeg"),
        }
        answer = requests.post(f"{url}/api/detections", files=files, timeout=10)
        assert answer.status_code == 201, answer.text

        def analysed() -> bool:
            inference = requests.get(f"{url}/api/status", timeout=5).json()["inference"]
            return sum(inference["counts"].values()) >= 1

        wait_for(analysed, 60, "the capture analysed by LiteRT")
    finally:
        daemon.terminate()
        code = daemon.wait(30)
    assert code == 0
