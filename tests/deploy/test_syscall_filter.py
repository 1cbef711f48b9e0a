"""The daemon and the cloud service work under their units' SystemCallFilter=.

No systemd runs here (PID 1 is not systemd, so no `systemd-run`), so the test builds the same
seccomp filter systemd would: the unit's SystemCallFilter= lines expanded with systemd-analyze's
own syscall groups, refused calls failing with EPERM (SystemCallErrorNumber=EPERM), loaded through
libseccomp (the library systemd uses) before the daemon starts. The daemon then takes a capture over
HTTP, analyses it with LiteRT and the default privacy finder (OpenCV), and stops cleanly; the
cloud service creates its schema, answers /readyz and stops cleanly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import free_port, jpeg, wait_for

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "systemd" / "fieldstation.service"
CLOUD_UNIT = ROOT / "systemd" / "fieldstation-cloud.service"

SECCOMP_RUN = """
import ctypes, os, sys
lib = ctypes.CDLL("libseccomp.so.2")
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
ctx = lib.seccomp_init(0x00050000 | 1)  # SCMP_ACT_ERRNO(EPERM)
for name in sys.argv[2].split(","):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr >= 0:  # names this libseccomp or this architecture does not know are skipped
        lib.seccomp_rule_add(ctx, 0x7FFF0000, nr, 0)  # SCMP_ACT_ALLOW
if lib.seccomp_load(ctx) != 0:
    sys.exit(5)
try:
    os.chown(sys.argv[1], os.getuid(), os.getgid())  # @chown is in ~@privileged
    print("the filter did not refuse chown"); sys.exit(4)
except PermissionError:
    pass
if sys.argv[3] == "cloud":
    from cloud.cli import main
    sys.exit(main(["--config", sys.argv[1], "serve"]))
from agent.cli import main
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def syscall_groups() -> dict[str, list[str]]:
    """systemd's syscall groups (`@name` -> members, nested groups by name), from systemd-analyze."""
    try:
        out = subprocess.run(
            ["systemd-analyze", "syscall-filter", "--no-pager"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    except FileNotFoundError:
        pytest.fail("systemd-analyze missing: install Debian's `systemd` (.ci/setup.d/deploy.sh)")
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        out |= expand(groups[name], groups) if name.startswith("@") else {name}
    return out


def unit_allowed_syscalls(unit: Path = UNIT) -> set[str]:
    """The allow list systemd builds from the unit's SystemCallFilter= lines, in order."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for line in unit.read_text().splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.split("=", 1)[1]
        if value.startswith("~"):
            allowed -= expand(value[1:].split(), groups)
        else:
            allowed |= expand(value.split(), groups)
    return allowed


@pytest.mark.parametrize("unit", [UNIT, CLOUD_UNIT], ids=lambda u: u.name)
def test_the_unit_filter_is_an_allow_list_without_privileged_calls(unit: Path) -> None:
    allowed = unit_allowed_syscalls(unit)
    assert {"read", "write", "fdatasync", "socket", "mmap"} <= allowed
    assert not {"chown", "setuid", "mount", "reboot", "setpriority"} & allowed


def test_the_daemon_takes_and_analyses_a_capture_under_the_unit_filter(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "station.toml"
    config.write_text(
        f'[station]\nid = "seccomp"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\n'
        f'[inference]\ndetector = "{ROOT / "models" / "fixtures" / "scene-animal"}"\n'
    )
    allowed = ",".join(sorted(unit_allowed_syscalls()))
    daemon = subprocess.Popen(
        [sys.executable, "-c", SECCOMP_RUN, str(config), allowed, "station"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if daemon.poll() is not None:
                raise AssertionError(daemon.stdout.read().decode() if daemon.stdout else "")
            try:
                return requests.get(f"{url}/readyz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, 60, "the daemon ready under the unit's syscall filter")
        meta = {"device_id": "a1b2c3", "timestamp": int(time.time())}
        files = {
            "metadata": (None, json.dumps(meta)),
            "image": ("c.jpg", jpeg(3, (320, 240)), "image/jpeg"),
        }
        answer = requests.post(f"{url}/api/detections", files=files, timeout=10)
        assert answer.status_code == 201, answer.text

        def analysed() -> bool:
            inference = requests.get(f"{url}/api/status", timeout=5).json()["inference"]
            return inference["counts"]["analysed"] + inference["counts"]["empty"] >= 1

        wait_for(analysed, 60, "the capture analysed under the filter")
    finally:
        daemon.terminate()
        code = daemon.wait(30)
    output = daemon.stdout.read().decode() if daemon.stdout else ""
    assert code == 0, output
    assert "Traceback" not in output, output


def test_the_cloud_service_opens_its_database_and_store_under_its_unit_filter(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = tmp_path / "cloud.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\ndata_dir = "{tmp_path / "data"}"\n')
    allowed = ",".join(sorted(unit_allowed_syscalls(CLOUD_UNIT)))
    service = subprocess.Popen(
        [sys.executable, "-c", SECCOMP_RUN, str(config), allowed, "cloud"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool:
            if service.poll() is not None:
                raise AssertionError(service.stdout.read().decode() if service.stdout else "")
            try:
                # /readyz: the schema was created, the database and the object store answer
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, 60, "the cloud service ready under its unit's syscall filter")
    finally:
        service.terminate()
        code = service.wait(30)
    output = service.stdout.read().decode() if service.stdout else ""
    assert code == 0, output
    assert "Traceback" not in output, output
