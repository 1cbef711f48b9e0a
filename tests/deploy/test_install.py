"""`fieldstation install systemd` / `uninstall systemd` into a temp root, checked file by file."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from agent.cli import main
from agent.config import load_config
from agent.install import FILES, INSTALL_COMMANDS, Installer
from tests.helpers import free_port, wait_for

ROOT = Path(__file__).parents[2]
SYSTEMD = ROOT / "systemd"
BIN = "/opt/fieldstation/venv/bin"


def install(root: Path, *extra: str) -> int:
    return main(["install", "systemd", "--root", str(root), "--bin-dir", BIN, *extra])


def test_install_writes_every_file_with_its_mode(tmp_path: Path, capsys) -> None:
    assert install(tmp_path) == 0
    out = capsys.readouterr().out
    expected = {
        "etc/systemd/system/fieldstation.service": 0o644,
        "etc/sysusers.d/fieldstation.conf": 0o644,
        "etc/tmpfiles.d/fieldstation.conf": 0o644,
        "etc/udev/rules.d/99-wildcam-units.rules": 0o644,
        "etc/mosquitto/conf.d/wildcam.conf": 0o644,
        "etc/fieldstation/station.toml": 0o640,
    }
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == set(expected)
    for rel, mode in expected.items():
        assert stat.S_IMODE((tmp_path / rel).stat().st_mode) == mode, rel
        assert f"wrote    {tmp_path / rel}" in out
    sources = {f.target.lstrip("/"): f.source for f in FILES}
    for rel in expected:
        assert (tmp_path / rel).read_text() == (SYSTEMD / sources[rel]).read_text(), rel


def test_install_into_a_root_runs_no_command(tmp_path: Path, capsys) -> None:
    install(tmp_path)
    out = capsys.readouterr().out
    for argv in INSTALL_COMMANDS:
        assert f"not run  {' '.join(argv)} ({tmp_path} is not the live system)" in out


def test_unit_runs_the_fieldstation_of_the_venv_it_was_installed_from(tmp_path: Path) -> None:
    main(["install", "systemd", "--root", str(tmp_path), "--bin-dir", "/srv/fs/bin"])
    unit = (tmp_path / "etc/systemd/system/fieldstation.service").read_text()
    exec_lines = [line for line in unit.splitlines() if line.startswith("ExecStart")]
    assert exec_lines and all(
        " /srv/fs/bin/fieldstation " in f" {line.split('=', 1)[1]}" for line in exec_lines
    )


def test_mosquitto_listens_on_the_named_lan_interface(tmp_path: Path) -> None:
    install(tmp_path, "--lan-interface", "eth1")
    conf = (tmp_path / "etc/mosquitto/conf.d/wildcam.conf").read_text()
    assert "bind_interface eth1" in conf and "wlan0" not in conf


def test_install_never_overwrites_station_toml(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "etc/fieldstation/station.toml"
    mine.parent.mkdir(parents=True)
    mine.write_text('[station]\nid = "ridge-7"\n')
    assert install(tmp_path) == 0
    assert mine.read_text() == '[station]\nid = "ridge-7"\n'
    assert f"kept     {mine} (already there, not overwritten)" in capsys.readouterr().out


def test_dry_run_prints_every_file_and_command_and_writes_nothing(tmp_path: Path, capsys) -> None:
    assert install(tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    for file in FILES:
        assert f"--- {tmp_path / file.target.lstrip('/')} (mode {file.mode:04o})" in out
    assert "Type=notify" in out and "set_tcp_nodelay true" in out  # the contents, not just names
    for argv in INSTALL_COMMANDS:
        assert f"$ {' '.join(argv)}" in out


def test_uninstall_removes_what_install_wrote_and_keeps_config_and_data(
    tmp_path: Path, capsys
) -> None:
    install(tmp_path)
    buffer = tmp_path / "var/lib/fieldstation/buffer.db"
    buffer.parent.mkdir(parents=True)
    buffer.write_bytes(b"captures")
    assert main(["uninstall", "systemd", "--root", str(tmp_path)]) == 0
    left = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert left == {"etc/fieldstation/station.toml", "var/lib/fieldstation/buffer.db"}
    assert buffer.read_bytes() == b"captures"
    assert "not run  systemctl disable --now fieldstation.service" in capsys.readouterr().out


def test_installed_station_toml_passes_config_check(tmp_path: Path) -> None:
    install(tmp_path)
    config = load_config(tmp_path / "etc/fieldstation/station.toml", env={}, required=True)
    assert str(config.data_dir) == "/var/lib/fieldstation" and config.mqtt.enabled


@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles chowns to the new user: needs root")
def test_sysusers_and_tmpfiles_make_the_user_and_folders(tmp_path: Path) -> None:
    install(tmp_path)
    shutil.copy("/etc/group", tmp_path / "etc/group")  # dialout exists on the station already
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}"], check=True, timeout=60)
    passwd = (tmp_path / "etc/passwd").read_text()
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("fieldstation:"))
    dialout = next(
        line
        for line in (tmp_path / "etc/group").read_text().splitlines()
        if line.startswith("dialout:")
    )
    assert user[5] == "/var/lib/fieldstation" and "fieldstation" in dialout.split(":")[3].split(",")
    # with --root, tmpfiles resolves fieldstation through the passwd and group files sysusers wrote
    subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create"], check=True, timeout=60)
    state, etc = tmp_path / "var/lib/fieldstation", tmp_path / "etc/fieldstation"
    assert stat.S_IMODE(state.stat().st_mode) == 0o750 and state.stat().st_uid == int(user[2])
    assert stat.S_IMODE(etc.stat().st_mode) == 0o755
    assert (etc.stat().st_uid, etc.stat().st_gid) == (0, int(user[3]))


def test_mosquitto_config_starts_a_broker_that_units_reach(tmp_path: Path) -> None:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.fail("mosquitto missing: apt-get install mosquitto")
    station_port, lan_port = free_port(), free_port()
    text = (SYSTEMD / "mosquitto-wildcam.conf").read_text()
    # the test's own ports, loopback as the "LAN", and a persistence folder (Debian's main file's job)
    text = text.replace("listener 1883 127.0.0.1", f"listener {station_port} 127.0.0.1")
    text = text.replace("listener 1883\n", f"listener {lan_port}\n")
    text = text.replace("bind_interface wlan0", "bind_interface lo")
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text + f"persistence_location {tmp_path}/\n")
    broker = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.PIPE, text=True)
    try:

        def listening(port: int) -> bool:
            if broker.poll() is not None:
                raise AssertionError(f"mosquitto exited: {broker.stderr and broker.stderr.read()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        for port in (station_port, lan_port):
            wait_for(lambda port=port: listening(port), 10, f"mosquitto on port {port}")
        # a camera unit carries no credentials: the LAN listener must let it in
        unit = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        assert unit.connect("127.0.0.1", lan_port, keepalive=10) == mqtt.MQTT_ERR_SUCCESS
        unit.loop_start()
        wait_for(unit.is_connected, 10, "an anonymous unit connected on the LAN listener")
        unit.loop_stop()
        unit.disconnect()
    finally:
        broker.terminate()
        broker.wait(10)


def test_on_a_live_systemd_host_install_runs_the_commands_in_order(tmp_path: Path) -> None:
    ran: list[list[str]] = []
    lines: list[str] = []
    installer = Installer(
        tmp_path, bin_dir=Path(BIN), out=lines.append, run=lambda argv: ran.append(argv) or 0
    )
    installer.live = True  # what systemd_running() says on a booted Pi with root "/"
    assert installer.install() == 0
    assert ran == [list(argv) for argv in INSTALL_COMMANDS]
    assert ran[0][0] == "systemd-sysusers" and ran[-1] == [
        "systemctl",
        "enable",
        "--now",
        "fieldstation.service",
    ]


def test_a_failing_command_fails_the_install(tmp_path: Path) -> None:
    lines: list[str] = []
    installer = Installer(
        tmp_path,
        bin_dir=Path(BIN),
        out=lines.append,
        run=lambda argv: 1 if argv[0] == "udevadm" else 0,
    )
    installer.live = True
    assert installer.install() == 1
    assert "ran      udevadm control --reload (exit 1)" in lines


def test_readme_install_and_uninstall_transcripts_are_real(tmp_path: Path, capsys) -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("$ fieldstation install systemd --root /tmp/pi-root") :]
    block = block[: block.index("```")]
    shown: dict[str, list[str]] = {}
    for line in block.splitlines():
        if line.startswith("$ "):
            command = line[2:]
            shown[command] = []
        elif line.strip():
            shown[command].append(line)
    assert len(shown) == 2
    for command, lines in shown.items():
        args = command.split()[1:]
        assert main([a.replace("/tmp/pi-root", str(tmp_path)) for a in args]) == 0
        real = capsys.readouterr().out.replace(str(tmp_path), "/tmp/pi-root").splitlines()
        assert real == lines, command
