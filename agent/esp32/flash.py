"""Flashing ESP32 units from the station with esptool 5's Python API (esptool.cmds).

A `FlashTarget` is what we write to: a real unit on a serial port (`EsptoolTarget`) or the flash
image file of a virtual unit (`ImageFileTarget`, port `virtual:PATH`), so the hardware-in-loop
suite runs the same code paths without a board.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

ESP_IMAGE_MAGIC = 0xE9
PARTITION_TABLE_OFFSET = 0x8000
PARTITION_TABLE_SIZE = 0xC00
# chips this firmware is built for, with their bootloader offsets
SUPPORTED = {"esp32": 0x1000, "esp32s3": 0x0}
VIRTUAL_PREFIX = "virtual:"
VIRTUAL_FLASH_SIZE = 4 * 1024 * 1024


class FlashError(RuntimeError):
    """A flashing or configuring step failed; the message says what to do about it."""


class NoDeviceError(FlashError):
    pass


class PortPermissionError(FlashError):
    pass


class WrongChipError(FlashError):
    pass


def chip_ids() -> dict[int, str]:
    """esptool's image chip ids -> chip names (esp32 = 0, esp32s3 = 9, ...)."""
    from esptool.targets import CHIP_DEFS

    return {
        cls.IMAGE_CHIP_ID: name for name, cls in CHIP_DEFS.items() if cls.IMAGE_CHIP_ID is not None
    }


def image_chip(data: bytes, what: str) -> str:
    """The chip an ESP app/bootloader image is built for, from its extended header."""
    if len(data) < 24 or data[0] != ESP_IMAGE_MAGIC:
        first = data[:1].hex() or "nothing"
        raise FlashError(f"{what} is not an ESP image (first byte {first}, expected e9)")
    (chip_id,) = struct.unpack_from("<H", data, 12)
    name = chip_ids().get(chip_id)
    if name is None:
        raise FlashError(f"{what} names an unknown chip id {chip_id}")
    return name


# --- firmware -----------------------------------------------------------------------------------


@dataclass
class Firmware:
    """What to write: (offset, bytes, name) parts for one chip, plus flash settings."""

    chip: str
    parts: list[tuple[int, bytes, str]]
    flash_mode: str = "keep"
    flash_freq: str = "keep"
    flash_size: str = "keep"
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(d) for _, d, _ in self.parts)


def load_firmware(path: Path) -> Firmware:
    """An ESP-IDF build folder (flasher_args.json) or a merged image from `esptool merge-bin`."""
    if path.is_dir():
        return _load_build_dir(path)
    if path.is_file():
        return _load_merged(path)
    raise FlashError(f"firmware {path} does not exist (give an ESP-IDF build folder or a .bin)")


def _load_build_dir(build: Path) -> Firmware:
    args_file = build / "flasher_args.json"
    if not args_file.is_file():
        raise FlashError(
            f"{build} has no flasher_args.json: run `idf.py build` first, or pass the merged .bin"
        )
    try:
        args = json.loads(args_file.read_text())
        files = args["flash_files"]
        settings = args.get("flash_settings", {})
    except (ValueError, KeyError, TypeError) as exc:
        raise FlashError(f"{args_file} is not ESP-IDF flasher arguments: {exc}") from exc
    parts: list[tuple[int, bytes, str]] = []
    for offset_text, rel in sorted(files.items(), key=lambda kv: int(kv[0], 0)):
        f = build / rel
        if not f.is_file():
            raise FlashError(f"{args_file} lists {rel}, which is missing")
        parts.append((int(offset_text, 0), f.read_bytes(), rel))
    chip = str(args.get("extra_esptool_args", {}).get("chip", ""))
    # the images themselves say which chip they are for; the json can be hand-edited. The
    # bootloader and the factory app must be ESP images; data parts (otadata, fat) are not checked.
    image_chips = {
        image_chip(data, name)
        for off, data, name in parts
        if "bootloader" in name or off in SUPPORTED.values() or off == 0x10000
    }
    if not image_chips:
        raise FlashError(f"{build}: no bootloader or app image with an ESP header")
    if len(image_chips) > 1:
        raise FlashError(f"{build}: images for several chips ({', '.join(sorted(image_chips))})")
    found = image_chips.pop()
    if chip and chip != found:
        raise FlashError(f"{args_file} says chip {chip} but its images are for {found}")
    if not any(off == PARTITION_TABLE_OFFSET for off, _, _ in parts):
        raise FlashError(
            f"{build}: no partition table at {PARTITION_TABLE_OFFSET:#x} in flasher_args.json"
        )
    return Firmware(
        found,
        parts,
        settings.get("flash_mode", "keep"),
        settings.get("flash_freq", "keep"),
        settings.get("flash_size", "keep"),
        str(build),
    )


def _load_merged(path: Path) -> Firmware:
    data = path.read_bytes()
    # a merged image starts at 0x0; the bootloader is at 0x1000 on the ESP32 and 0x0 on the S3
    for off in sorted(set(SUPPORTED.values())):
        if len(data) > off and data[off] == ESP_IMAGE_MAGIC:
            chip = image_chip(data[off:], f"{path.name} at {off:#x}")
            if chip in SUPPORTED and SUPPORTED[chip] != off:
                raise FlashError(
                    f"{path.name}: a {chip} bootloader at {off:#x}, it belongs at {SUPPORTED[chip]:#x}"
                )
            return Firmware(chip, [(0, data, path.name)], source=str(path))
    raise FlashError(
        f"{path.name} is not a merged ESP-IDF image (no e9 header at 0x0 or 0x1000); "
        "pass the build folder or the output of `esptool merge-bin`"
    )


# --- targets ------------------------------------------------------------------------------------


class FlashTarget(Protocol):
    chip: str  # esptool chip name, e.g. "esp32s3"
    mac: str
    port: str

    def read_flash(self, offset: int, size: int) -> bytes: ...

    def write_flash(
        self, parts: list[tuple[int, bytes]], firmware: Firmware | None = None
    ) -> None: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


def _chip_name(esp: object) -> str:
    """esptool's CHIP_NAME ("ESP32-S3") -> our chip name ("esp32s3")."""
    return str(getattr(esp, "CHIP_NAME", "")).lower().replace("-", "")


def _port_error(port: str, exc: BaseException) -> FlashError:
    text = str(exc)
    code = getattr(exc, "errno", None)
    if code == errno.EACCES or "Permission denied" in text:
        return PortPermissionError(
            f"no permission to open {port}: add this user to the 'dialout' group "
            f"(sudo usermod -aG dialout $USER, then log in again) or run as root"
        )
    if code == errno.ENOENT or "No such file or directory" in text or "could not open port" in text:
        return NoDeviceError(
            f"no device at {port}: is the unit plugged in? (see `fieldstation esp32 inventory`)"
        )
    return NoDeviceError(
        f"no ESP32 answered on {port}: hold BOOT (IO0 to GND on an ESP32-CAM) while pressing "
        f"RESET, or check the cable. esptool said: {text.strip().splitlines()[0] if text.strip() else exc!r}"
    )


class EsptoolTarget:
    """A unit on a serial port, through esptool.cmds (connect, stub, read/write/verify, reset)."""

    def __init__(
        self, port: str, chip: str = "auto", baud: int = 460800, connect_attempts: int = 3
    ) -> None:
        import serial
        from esptool.cmds import attach_flash, detect_chip, run_stub
        from esptool.util import FatalError

        self.port = port
        if not os.path.exists(port) and "://" not in port:
            raise NoDeviceError(
                f"no device at {port}: is the unit plugged in? (see `fieldstation esp32 inventory`)"
            )
        try:
            esp = detect_chip(port, connect_attempts=connect_attempts)
        except (FatalError, OSError, serial.SerialException) as exc:
            raise _port_error(port, exc) from exc
        found = _chip_name(esp)
        if chip != "auto" and chip != found:
            esp._port.close()
            raise WrongChipError(
                f"--chip {chip} was asked for, but the unit on {port} is an {esp.CHIP_NAME}"
            )
        try:
            esp = run_stub(esp)
            if baud != esp.ESP_ROM_BAUD:
                esp.change_baud(baud)
            attach_flash(esp)
            self.mac = ":".join(f"{b:02x}" for b in esp.read_mac())
        except (FatalError, OSError, serial.SerialException) as exc:
            esp._port.close()
            raise FlashError(f"talking to the {esp.CHIP_NAME} on {port} failed: {exc}") from exc
        self.esp = esp
        self.chip = found

    def read_flash(self, offset: int, size: int) -> bytes:
        from esptool.cmds import read_flash

        data = read_flash(self.esp, offset, size, output=None, no_progress=True)
        assert data is not None
        return data

    def write_flash(self, parts: list[tuple[int, bytes]], firmware: Firmware | None = None) -> None:
        from esptool.cmds import verify_flash, write_flash
        from esptool.util import FatalError

        settings = {
            "flash_mode": firmware.flash_mode if firmware else "keep",
            "flash_freq": firmware.flash_freq if firmware else "keep",
            "flash_size": firmware.flash_size if firmware else "keep",
        }
        addr_data = [(off, data) for off, data in parts]
        try:
            write_flash(
                self.esp, addr_data, **settings
            )  # compares an MD5 of each region after writing
            verify_flash(self.esp, addr_data, **settings)  # and read back once more, explicitly
        except FatalError as exc:
            raise FlashError(f"writing {self.port} failed: {exc}") from exc

    def reset(self) -> None:
        from esptool.cmds import reset_chip

        reset_chip(self.esp, "hard-reset")

    def close(self) -> None:
        try:
            self.esp._port.close()
        except Exception:  # noqa: BLE001 - closing a port that went away is fine
            pass


class ImageFileTarget:
    """A virtual unit's flash chip: a file of VIRTUAL_FLASH_SIZE bytes, its chip and MAC beside it."""

    def __init__(self, path: Path, chip: str = "auto") -> None:
        self.port = f"{VIRTUAL_PREFIX}{path}"
        self.path = path
        meta_file = path.with_suffix(".json")
        if not path.is_file() or not meta_file.is_file():
            raise NoDeviceError(f"no virtual unit at {path} (create one with create_virtual_flash)")
        meta = json.loads(meta_file.read_text())
        self.chip = meta["chip"]
        self.mac = meta["mac"]
        self.resets = int(meta.get("resets", 0))
        if chip != "auto" and chip != self.chip:
            raise WrongChipError(
                f"--chip {chip} was asked for, but the unit on {self.port} is an {self.chip}"
            )

    def read_flash(self, offset: int, size: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(size)

    def write_flash(self, parts: list[tuple[int, bytes]], firmware: Firmware | None = None) -> None:
        total = self.path.stat().st_size
        for off, data in parts:
            if off + len(data) > total:
                raise FlashError(
                    f"{len(data)} bytes at {off:#x} do not fit in {total // 1024} KiB of flash"
                )
        with open(self.path, "r+b") as f:
            for off, data in parts:
                f.seek(off)
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        for off, data in parts:  # verify, as esptool does with MD5s
            if self.read_flash(off, len(data)) != data:
                raise FlashError(f"verify failed at {off:#x} on {self.port}")

    def reset(self) -> None:
        meta_file = self.path.with_suffix(".json")
        meta = json.loads(meta_file.read_text())
        meta["resets"] = int(meta.get("resets", 0)) + 1
        meta_file.write_text(json.dumps(meta))

    def close(self) -> None:
        pass


def create_virtual_flash(path: Path, chip: str = "esp32s3", mac: str = "24:0a:c4:00:00:01") -> Path:
    """An erased 4 MiB flash file for a virtual unit (what a new board looks like)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\xff" * VIRTUAL_FLASH_SIZE)
    path.with_suffix(".json").write_text(json.dumps({"chip": chip, "mac": mac}))
    return path


def open_target(port: str, chip: str = "auto", baud: int = 460800) -> FlashTarget:
    """The unit on `port` (a serial device, or virtual:PATH for a virtual unit's flash file)."""
    if port.startswith(VIRTUAL_PREFIX):
        return ImageFileTarget(Path(port[len(VIRTUAL_PREFIX) :]), chip)
    return EsptoolTarget(port, chip, baud)


# --- the flash command ---------------------------------------------------------------------------


def flash(
    port: str,
    firmware_path: Path,
    chip: str = "auto",
    *,
    baud: int = 460800,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
    target_factory: Callable[[str, str, int], FlashTarget] = open_target,
) -> Firmware:
    """Detect the chip, check the firmware is for it, write with verify, reset.

    `dry_run`: say what would be written and check the chip (when a port is given), write nothing.
    """
    firmware = load_firmware(firmware_path)
    if chip != "auto" and chip != firmware.chip:
        raise WrongChipError(
            f"--chip {chip} was given but {firmware_path} is built for {firmware.chip}"
        )
    say(
        f"firmware  {firmware.source}  ({firmware.chip}, {len(firmware.parts)} parts, {firmware.size // 1024} KiB)"
    )
    if dry_run and not port:
        for off, data, name in firmware.parts:
            say(f"would write {off:#08x}  {len(data):>8} bytes  {name}")
        say("dry run   nothing written (give --port to check the unit's chip too)")
        return firmware
    target = target_factory(port, chip, baud)
    try:
        say(f"unit      {target.port}  chip {target.chip}  MAC {target.mac}")
        if target.chip != firmware.chip:
            raise WrongChipError(
                f"this firmware is built for {firmware.chip} but the unit on {port} is an {target.chip}: "
                f"build with `idf.py set-target {target.chip}` or pick the {target.chip} build"
            )
        if dry_run:
            for off, data, name in firmware.parts:
                say(f"would write {off:#08x}  {len(data):>8} bytes  {name}")
            target.reset()  # probing put it in the bootloader: back to its firmware
            say("dry run   nothing written; the unit and the firmware match")
            return firmware
        for off, data, name in firmware.parts:
            say(f"write     {off:#08x}  {len(data):>8} bytes  {name}")
        target.write_flash([(off, data) for off, data, _ in firmware.parts], firmware)
        say("verify    ok (every region read back)")
        target.reset()
        say("reset     done: the unit boots the new firmware")
    finally:
        target.close()
    return firmware


def inventory_ports(include_all: bool = False) -> list[dict[str, object]]:
    """Serial ports that look like ESP32 units (USB-UART bridges and native USB), by-id paths."""
    from serial.tools import list_ports

    known_vids = {0x303A: "Espressif USB", 0x10C4: "CP210x", 0x1A86: "CH34x", 0x0403: "FTDI"}
    by_id: dict[str, str] = {}
    by_id_dir = Path("/dev/serial/by-id")
    if by_id_dir.is_dir():
        for link in by_id_dir.iterdir():
            by_id[os.path.realpath(link)] = str(link)
    out: list[dict[str, object]] = []
    for info in sorted(list_ports.comports(), key=lambda i: i.device):
        if info.vid not in known_vids and not include_all:
            continue
        out.append(
            {
                "port": info.device,
                "by_id": by_id.get(os.path.realpath(info.device), ""),
                "usb": known_vids.get(info.vid or -1, info.description or ""),
                "serial_number": info.serial_number or "",
            }
        )
    return out
