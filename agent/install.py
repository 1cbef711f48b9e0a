"""`fieldstation install systemd` and `fieldstation uninstall systemd`.

Copies the files in the repository's `systemd/` folder (installed beside the package as
share/fieldstation/systemd) to their places on a station, then asks systemd to pick them up —
only when the target is the live system and systemd runs it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.store import BUFFER_FILE

# Where the unit's ExecStart= expects the venv (README: python3 -m venv /opt/fieldstation/venv).
UNIT_BIN_DIR = "/opt/fieldstation/venv/bin"
UNIT = "fieldstation.service"
DATA_DIR = "/var/lib/fieldstation"


class InstallError(RuntimeError):
    """The install cannot go on (its source files are missing); says what to do."""


@dataclass(frozen=True)
class SystemdFile:
    source: str  # name in systemd/
    target: str  # absolute path on the station
    mode: int
    keep: bool = False  # written only when absent, and left in place by uninstall


FILES: tuple[SystemdFile, ...] = (
    SystemdFile("fieldstation.service", f"/etc/systemd/system/{UNIT}", 0o644),
    SystemdFile("fieldstation.sysusers", "/etc/sysusers.d/fieldstation.conf", 0o644),
    SystemdFile("fieldstation.tmpfiles", "/etc/tmpfiles.d/fieldstation.conf", 0o644),
    SystemdFile("99-wildcam-units.rules", "/etc/udev/rules.d/99-wildcam-units.rules", 0o644),
    SystemdFile("mosquitto-wildcam.conf", "/etc/mosquitto/conf.d/wildcam.conf", 0o644),
    # group fieldstation reads it (the daemon); the technician's edits are never overwritten
    SystemdFile("station.toml", "/etc/fieldstation/station.toml", 0o640, keep=True),
)

INSTALL_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("systemd-sysusers", "/etc/sysusers.d/fieldstation.conf"),
    ("systemd-tmpfiles", "--create", "/etc/tmpfiles.d/fieldstation.conf"),
    ("chgrp", "fieldstation", "/etc/fieldstation/station.toml"),
    ("udevadm", "control", "--reload"),
    ("udevadm", "trigger", "--subsystem-match=tty", "--action=add"),
    ("systemctl", "daemon-reload"),
    ("systemctl", "try-restart", "mosquitto.service"),
    ("systemctl", "enable", "--now", UNIT),
)

UNINSTALL_COMMANDS_BEFORE: tuple[tuple[str, ...], ...] = (("systemctl", "disable", "--now", UNIT),)
UNINSTALL_COMMANDS_AFTER: tuple[tuple[str, ...], ...] = (
    ("systemctl", "daemon-reload"),
    ("udevadm", "control", "--reload"),
    ("systemctl", "try-restart", "mosquitto.service"),
)


def station_data_dir(
    configured: str, override: Path | None, env: dict[str, str] | None = None
) -> tuple[Path, str]:
    """The station's data folder for read commands, and how it was found (said to the user).

    --data-dir, then station.data_dir, then $STATE_DIRECTORY (set by systemd for the unit), then
    the systemd station's folder when it holds a buffer, then ./fieldstation-data.
    """
    env = dict(os.environ) if env is None else env
    if override is not None:
        return Path(override), "--data-dir"
    if configured:
        return Path(configured), "station.data_dir"
    state = env.get("STATE_DIRECTORY")
    if state:
        # systemd may pass several colon-separated folders; the first is the station's
        return Path(state.split(":")[0]), "$STATE_DIRECTORY"
    if (Path(DATA_DIR) / BUFFER_FILE).exists():
        return Path(DATA_DIR), "the systemd station's StateDirectory"
    return Path("fieldstation-data"), "the default ./fieldstation-data"


def source_dir() -> Path:
    """The folder holding the systemd files: the wheel's data files, else the source checkout."""
    for candidate in (
        Path(sys.prefix) / "share" / "fieldstation" / "systemd",
        Path(__file__).resolve().parents[1] / "systemd",
    ):
        if (candidate / "fieldstation.service").is_file():
            return candidate
    raise InstallError(
        "the systemd files are not installed: run from a source checkout "
        "(pip install -e /path/to/wildcam-fieldstation) or reinstall the package"
    )


def default_bin_dir() -> Path:
    """The folder of the running `fieldstation` (where pip put it beside the venv's python)."""
    return Path(sys.executable).parent


def render(file: SystemdFile, source: Path, bin_dir: Path, lan_interface: str) -> str:
    """A file's text as it is installed: the unit runs this venv, Mosquitto listens on this LAN."""
    text = (source / file.source).read_text(encoding="utf-8")
    if file.source.endswith(".service"):
        text = text.replace(f"{UNIT_BIN_DIR}/", f"{bin_dir}/")
    if file.source == "mosquitto-wildcam.conf":
        text = text.replace("bind_interface wlan0", f"bind_interface {lan_interface}")
    return text


def systemd_running(root: Path) -> bool:
    """sd_booted(): true when the target is this machine and systemd is its init."""
    return root.resolve() == Path("/") and Path("/run/systemd/system").is_dir()


class Installer:
    """Writes or removes the files under `root`; `out` gets one line per action."""

    def __init__(
        self,
        root: Path,
        *,
        dry_run: bool = False,
        bin_dir: Path | None = None,
        lan_interface: str = "wlan0",
        out: Callable[[str], None] = print,
        run: Callable[[list[str]], int] | None = None,
    ) -> None:
        self.root = root
        self.dry_run = dry_run
        self.bin_dir = bin_dir or default_bin_dir()
        self.lan_interface = lan_interface
        self.out = out
        self.run = run or _run
        self.live = systemd_running(root)
        self.failed: list[str] = []

    def path(self, target: str) -> Path:
        return self.root / target.lstrip("/")

    def install(self) -> int:
        source = source_dir()
        if str(self.bin_dir).startswith(("/home/", "/root/", "/run/user/")) and not self.dry_run:
            hint = f"install the venv under /opt (e.g. {UNIT_BIN_DIR})"
            self.out(f"warning: ProtectHome=yes hides {self.bin_dir} from the unit; {hint}")
        for file in FILES:
            path = self.path(file.target)
            text = render(file, source, self.bin_dir, self.lan_interface)
            if file.keep and path.exists():
                self.out(f"kept     {path} (already there, not overwritten)")
                continue
            if self.dry_run:
                self.out(f"--- {path} (mode {file.mode:04o})")
                self.out(text.rstrip("\n"))
                continue
            _write(path, text, file.mode)
            self.out(f"wrote    {path}")
        self._commands(INSTALL_COMMANDS)
        return 1 if self.failed else 0

    def uninstall(self) -> int:
        self._commands(UNINSTALL_COMMANDS_BEFORE)
        for file in FILES:
            path = self.path(file.target)
            if file.keep:
                self.out(f"kept     {path} (your configuration)")
                continue
            if not path.exists():
                self.out(f"absent   {path}")
                continue
            if self.dry_run:
                self.out(f"--- remove {path}")
                continue
            path.unlink()
            self.out(f"removed  {path}")
        self.out(f"kept     {self.path(DATA_DIR)} (the buffer and models)")
        self._commands(UNINSTALL_COMMANDS_AFTER)
        return 1 if self.failed else 0

    def _commands(self, commands: tuple[tuple[str, ...], ...]) -> None:
        for argv in commands:
            line = shlex.join(argv)
            if self.dry_run:
                self.out(f"$ {line}" + ("" if self.live else f"  (not run: {self._why_not()})"))
            elif not self.live:
                self.out(f"not run  {line} ({self._why_not()})")
            else:
                code = self.run(list(argv))
                self.out(f"ran      {line}" + (f" (exit {code})" if code else ""))
                if code:
                    self.failed.append(line)

    def _why_not(self) -> str:
        if self.root.resolve() != Path("/"):
            return f"{self.root} is not the live system"
        return "systemd is not running here"


def _write(path: Path, text: str, mode: int) -> None:
    """Write through a temp file and rename, so a unit is never seen half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _run(argv: list[str]) -> int:
    try:
        return subprocess.run(argv, check=False).returncode
    except FileNotFoundError:
        return 127  # as the shell says for a missing command (e.g. no udevadm in a container)


def cmd_install(args: argparse.Namespace) -> int:
    installer = Installer(
        args.root, dry_run=args.dry_run, bin_dir=args.bin_dir, lan_interface=args.lan_interface
    )
    return _guarded(installer.install)


def cmd_uninstall(args: argparse.Namespace) -> int:
    return _guarded(Installer(args.root, dry_run=args.dry_run).uninstall)


def _guarded(action: Callable[[], int]) -> int:
    try:
        return action()
    except InstallError as exc:
        print(f"fieldstation: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(f"fieldstation: {exc} (run with sudo, or use --root DIR)", file=sys.stderr)
        return 1


def add_subcommands(subparsers: Any) -> None:
    """Add `install systemd` and `uninstall systemd` to the fieldstation command."""
    install = subparsers.add_parser("install", help="put the station under systemd")
    isub = install.add_subparsers(dest="install_target", required=True)
    systemd = isub.add_parser(
        "systemd", help="units, sysusers, tmpfiles, udev rule, Mosquitto config, station.toml"
    )
    systemd.add_argument("--root", type=Path, default=Path("/"), help="install below this folder")
    systemd.add_argument("--dry-run", action="store_true", help="print every file and command")
    systemd.add_argument(
        "--bin-dir", type=Path, default=None,
        help=f"folder holding the fieldstation command (default: this one's, {default_bin_dir()})",
    )  # fmt: skip
    systemd.add_argument(
        "--lan-interface", default="wlan0", help="the camera units' network interface (Mosquitto)"
    )
    systemd.set_defaults(func=cmd_install)

    uninstall = subparsers.add_parser("uninstall", help="remove what install wrote; keep the data")
    usub = uninstall.add_subparsers(dest="install_target", required=True)
    usystemd = usub.add_parser("systemd", help="disable the unit and remove its files")
    usystemd.add_argument(
        "--root", type=Path, default=Path("/"), help="uninstall below this folder"
    )
    usystemd.add_argument("--dry-run", action="store_true", help="print every file and command")
    usystemd.set_defaults(func=cmd_uninstall)
