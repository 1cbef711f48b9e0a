"""flash / configure / inventory / monitor: real esptool against ports with no board, virtual boards."""

from __future__ import annotations

import json
import os
import tty
from pathlib import Path

import esptool.cmds  # noqa: F401 - loaded before the unprivileged fork, which cannot read the stdlib
import esptool.targets  # noqa: F401
import pytest
import serial  # noqa: F401

from agent import protocol as p
from agent.cli import main as fieldstation
from agent.esp32.configure import NAMESPACE, UnitSettings, configure, read_unit_settings
from agent.esp32.flash import (
    FlashError,
    NoDeviceError,
    PortPermissionError,
    WrongChipError,
    flash,
    load_firmware,
    open_target,
)
from agent.esp32.monitor import LineSplitter, monitor
from agent.esp32.nvs import NvsValue, read_nvs
from agent.esp32.virtual_board import VirtualBoard, write_virtual_build

VECTORS = Path(__file__).resolve().parents[2] / "esp32" / "test-vectors"


@pytest.fixture
def build_s3(tmp_path) -> Path:
    return write_virtual_build(tmp_path / "build-s3", "esp32s3")


@pytest.fixture
def board(tmp_path) -> VirtualBoard:
    return VirtualBoard(tmp_path / "unit.flash", "esp32s3")


@pytest.fixture
def silent_pty():
    """A serial port with nothing behind it: esptool gets no answer."""
    master, slave = os.openpty()
    tty.setraw(slave)
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_flash_to_a_port_that_does_not_exist_says_no_device(build_s3, capsys):
    assert fieldstation(["esp32", "flash", "--port", "/dev/ttyUSB-none", str(build_s3)]) == 2
    assert "no device at /dev/ttyUSB-none" in capsys.readouterr().err


def test_flash_to_a_port_where_no_esp32_answers_says_so(build_s3, silent_pty):
    with pytest.raises(NoDeviceError, match=f"no ESP32 answered on {silent_pty}"):
        flash(silent_pty, build_s3, say=lambda s: None)


def test_flash_without_permission_on_the_port_says_how_to_fix_it(silent_pty):
    os.chmod(silent_pty, 0o600)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: an unprivileged technician's account (root opens any device)
        code = 1
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            else:
                os.chmod(silent_pty, 0o000)
            try:
                open_target(silent_pty)  # what flash and configure do first
            except PortPermissionError as exc:
                os.write(write_end, str(exc).encode())
                code = 3
        finally:
            os._exit(code)
    os.close(write_end)
    message = os.read(read_end, 4096).decode()
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3, message
    assert f"no permission to open {silent_pty}" in message and "dialout" in message


def test_wrong_chip_is_refused_before_anything_is_written(tmp_path, board):
    build_esp32 = write_virtual_build(tmp_path / "build-esp32", "esp32")
    before = board.path.read_bytes()
    with pytest.raises(WrongChipError, match="built for esp32 but the unit .* is an esp32s3"):
        flash(board.port, build_esp32, say=lambda s: None)
    assert board.path.read_bytes() == before


def test_chip_option_disagreeing_with_the_firmware_is_refused(build_s3, board):
    with pytest.raises(WrongChipError, match="--chip esp32 was given"):
        flash(board.port, build_s3, "esp32", say=lambda s: None)


def test_flash_writes_every_part_verifies_and_resets(build_s3, board, capsys):
    assert fieldstation(["esp32", "flash", "--port", board.port, str(build_s3)]) == 0
    out = capsys.readouterr().out
    assert "verify    ok" in out and "reset     done" in out
    image = board.path.read_bytes()
    for off, data, _ in load_firmware(build_s3).parts:
        assert image[off : off + len(data)] == data
    assert json.loads(board.path.with_suffix(".json").read_text())["resets"] == 1
    assert board.firmware_version() == "virtual-1.0.0"


def test_build_folder_without_flasher_args_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlashError, match="no flasher_args.json"):
        load_firmware(tmp_path / "empty")


def test_build_folder_whose_images_are_not_esp_images_is_refused(build_s3):
    (build_s3 / "bootloader" / "bootloader.bin").write_bytes(b"\x7fELF" + b"\0" * 100)
    with pytest.raises(FlashError, match="not an ESP image"):
        load_firmware(build_s3)


def test_build_folder_whose_json_names_another_chip_is_refused(build_s3):
    args = json.loads((build_s3 / "flasher_args.json").read_text())
    args["extra_esptool_args"]["chip"] = "esp32"
    (build_s3 / "flasher_args.json").write_text(json.dumps(args))
    with pytest.raises(FlashError, match="says chip esp32 but its images are for esp32s3"):
        load_firmware(build_s3)


def test_merged_image_chip_comes_from_its_bootloader_header(tmp_path):
    build = write_virtual_build(tmp_path / "b", "esp32")
    boot = (build / "bootloader" / "bootloader.bin").read_bytes()
    merged = tmp_path / "merged.bin"
    merged.write_bytes(b"\xff" * 0x1000 + boot)  # esptool merge-bin pads up to the ESP32's 0x1000
    fw = load_firmware(merged)
    assert fw.chip == "esp32" and fw.parts[0][0] == 0
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 8192)
    with pytest.raises(FlashError, match="not a merged ESP-IDF image"):
        load_firmware(tmp_path / "junk.bin")


def test_configure_a_unit_without_a_partition_table_says_flash_first(board):
    with pytest.raises(FlashError, match="no partition table at 0x8000"):
        configure(UnitSettings("cam-01"), board.port, say=lambda s: None)


def test_configure_a_unit_whose_partition_table_is_damaged_is_refused(build_s3, board):
    flash(board.port, build_s3, say=lambda s: None)
    data = bytearray(board.path.read_bytes())
    data[0x8000 + 40] ^= 0xFF  # inside the first entry: the table's MD5 no longer matches
    board.path.write_bytes(bytes(data))
    with pytest.raises(FlashError, match="damaged"):
        configure(UnitSettings("cam-01"), board.port, say=lambda s: None)


def test_configure_writes_nvs_at_the_offset_from_the_units_table(build_s3, board):
    flash(board.port, build_s3, say=lambda s: None)
    result = configure(
        UnitSettings("cam-01", quiet=(1200, 360), tz_offset_min=-300),
        board.port,
        say=lambda s: None,
    )
    assert result.offset == 0x9000
    got = read_unit_settings(board.path.read_bytes())
    assert got["unit_id"] == NvsValue("string", "cam-01")
    assert got["quiet_start"] == NvsValue("u16", 1200) and got["tz_offset_min"] == NvsValue(
        "i16", -300
    )


def test_configure_dry_run_writes_an_image_that_reads_back(tmp_path, capsys):
    pw = tmp_path / "wifi.txt"
    pw.write_text("correct horse battery\n")
    out = tmp_path / "out"
    rc = fieldstation(
        [
            "esp32",
            "configure",
            "--unit-id",
            "cam-02",
            "--wifi-ssid",
            "FieldNet",
            "--wifi-password-file",
            str(pw),
            "--mqtt-uri",
            "mqtt://192.168.4.1:1883",
            "--station",
            "ridge",
            "--quiet",
            "20:00-06:00",
            "--dry-run",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((out / "nvs-cam-02.json").read_text())
    assert manifest["nvs_offset"] == "0x9000"
    values = read_nvs((out / "nvs-cam-02.bin").read_bytes())[NAMESPACE]
    assert values["wifi_pass"] == NvsValue("string", "correct horse battery")
    assert values["transport"] == NvsValue("u8", 1) and values["quiet_end"] == NvsValue("u16", 360)


def test_configure_with_a_too_long_ssid_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    rc = fieldstation(
        [
            "esp32",
            "configure",
            "--unit-id",
            "cam-03",
            "--wifi-ssid",
            "s" * 40,
            "--dry-run",
            "--out",
            str(out),
        ]
    )
    assert rc == 2 and "wifi_ssid is 40 bytes" in capsys.readouterr().err
    assert not out.exists()


def test_configure_with_an_unreadable_password_file_says_so(tmp_path, capsys):
    rc = fieldstation(
        [
            "esp32",
            "configure",
            "--unit-id",
            "cam-04",
            "--wifi-password-file",
            str(tmp_path / "missing"),
            "--dry-run",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 2 and "cannot read --wifi-password-file" in capsys.readouterr().err


def test_inventory_lists_serial_ports_as_json(capsys):
    assert fieldstation(["esp32", "inventory", "--no-probe", "--all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list)
    assert all({"port", "by_id", "chip", "mac"} <= set(r) for r in rows)


def test_monitor_splits_log_lines_from_frames():
    doc = json.loads((VECTORS / "stream-noise.json").read_text())
    stream = bytes.fromhex(doc["stream_hex"]) + b"I (312) wildcam: capture 3 stored\r\n"
    s = LineSplitter()
    items = [item for b in stream for item in s.feed(bytes([b]))]
    frames = [i for kind, i in items if kind == "frame"]
    text = [i for kind, i in items if kind == "text"]
    assert [f.type for f in frames] == [p.FrameType.HELLO, p.FrameType.TELEMETRY]
    assert text[0] == "boot: rst:0x1" and text[-1].endswith("wildcam: capture 3 stored")


def test_monitor_on_a_missing_port_says_no_device(capsys):
    assert (
        fieldstation(["esp32", "monitor", "--port", "/dev/ttyUSB-none", "--duration", "0.1"]) == 2
    )
    assert "no device at" in capsys.readouterr().err


def test_monitor_prints_a_units_frames_from_a_pty():
    master, slave = os.openpty()
    tty.setraw(slave)
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if line.startswith("monitoring"):  # the port is open now: the unit talks
            os.write(master, b"I (10) boot: hello\n" + p.encode_frame(p.Ack(5, 0), 3))

    try:
        assert monitor(os.ttyname(slave), duration=0.5, say=say) == 0
    finally:
        os.close(master)
        os.close(slave)
    out = "\n".join(lines)
    assert "log    I (10) boot: hello" in out and "frame  ACK seq=3 capture_id=5 status=0" in out
