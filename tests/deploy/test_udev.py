"""The udev rule for ESP32 serial adapters, read by udev's own rules parser.

systemd 252 has no `udevadm verify`, so `udevadm test` loads the rule in a private mount namespace
(empty rules folders, /dev and /run on tmpfs: nothing on the host changes) and every line it
complains about is reported as `<file>:<line> <reason>`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
RULE = ROOT / "systemd" / "99-wildcam-units.rules"
TARGET = "/etc/udev/rules.d/99-wildcam-units.rules"

# inside the namespace: only our rule is read, and nothing udev writes reaches the host
LOAD_ALONE = """
set -e
for d in /dev /run /etc/udev/rules.d /usr/lib/udev/rules.d; do mount -t tmpfs none "$d"; done
cp "$1" {target}
exec udevadm test --action=add /sys/class/tty/tty
"""


def udev_complaints(rule: Path) -> list[str]:
    """Every line udev's parser reports about `rule` (empty: udev reads it as written)."""
    if shutil.which("udevadm") is None:
        pytest.fail("udevadm is missing: apt-get install udev")
    done = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "sh", "-c", LOAD_ALONE.format(target=TARGET),
         "sh", str(rule)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert f"Reading rules file: {TARGET}" in out, out[-3000:]
    return [line for line in out.splitlines() if line.startswith(f"{TARGET}:")]


def test_the_check_catches_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.rules"
    broken.write_text(
        'SUBSYSTEM!="tty", GOTO="nowhere"\n'
        'SUBSYSTEM=="tty", GROUP="no-such-group"\n'
        'SUBSYSTEM=="tty", SYMLINK+="wildcam/$env{ID_PATH"\n'
        'SUBSYSTEM=="tty", ATTR{idVendor}=!"303a"\n'
    )
    found = [re.match(rf"{TARGET}:(\d+)", c) for c in udev_complaints(broken)]
    assert {int(m.group(1)) for m in found if m} == {1, 2, 3, 4}


def test_udev_reads_the_rule_without_a_complaint() -> None:
    assert udev_complaints(RULE) == []


def test_every_adapter_the_readme_names_is_matched() -> None:
    text = RULE.read_text()
    pairs = set(re.findall(r'ATTRS\{idVendor\}=="(\w{4})", ATTRS\{idProduct\}=="(\w{4})"', text))
    assert {
        ("10c4", "ea60"),  # Silicon Labs CP210x
        ("1a86", "7523"),  # WCH CH340
        ("1a86", "55d4"),  # WCH CH9102
        ("303a", "1001"),  # ESP32-S3 native USB-Serial/JTAG
    } <= pairs
    # the names the README and station.toml use; by-port follows the hub ports (ID_PATH)
    assert 'SYMLINK+="wildcam/by-serial/$env{ID_SERIAL_SHORT}"' in text
    assert 'SYMLINK+="wildcam/by-port/$env{ID_PATH}"' in text
    assert 'GROUP="dialout"' in text
