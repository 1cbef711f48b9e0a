"""A virtual board for the hardware-in-loop suite: a flash chip (a file), firmware for it, and a
boot that reads the unit's settings from its NVS partition like the firmware's app_main does.

`flash` and `configure` write to it through `virtual:PATH` ports with the same code that drives a
real board over esptool; booting hands the NVS contents to the firmware's C core.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from agent.esp32.configure import (
    NVS_KEYS,
    build_nvs_image,
    default_partitions_csv,
    nvs_partition,
    partition_table_from_file,
    read_unit_settings,
)
from agent.esp32.flash import (
    PARTITION_TABLE_OFFSET,
    SUPPORTED,
    FlashError,
    create_virtual_flash,
)
from agent.esp32.host_unit import CoreVirtualUnit
from agent.esp32.virtual import UnitLink

VIRTUAL_APP_MARK = b"WILDCAM-VIRTUAL-APP\0"


def _esp_image(chip: str, payload: bytes) -> bytes:
    """A genuine ESP app image (esptool's own writer) for `chip`, carrying payload as data."""
    from esptool.bin_image import ESP32FirmwareImage, ESP32S3FirmwareImage, ImageSegment

    cls, dram = {
        "esp32": (ESP32FirmwareImage, 0x3FFB0000),
        "esp32s3": (ESP32S3FirmwareImage, 0x3FC88000),
    }[chip]
    img = cls()
    seg = ImageSegment(dram, payload + b"\0" * (-len(payload) % 4))
    seg.name = ".dram0.data"
    img.segments = [seg]
    img.entrypoint = 0x40080000 if chip == "esp32" else 0x40375000
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "image.bin"
        img.save(str(out))
        return out.read_bytes()


def write_virtual_build(build: Path, chip: str = "esp32s3", version: str = "virtual-1.0.0") -> Path:
    """An ESP-IDF-style build folder (flasher_args.json, bootloader, partition table, app)."""
    if chip not in SUPPORTED:
        raise ValueError(f"chip {chip!r} is not one of {', '.join(SUPPORTED)}")
    (build / "bootloader").mkdir(parents=True, exist_ok=True)
    (build / "partition_table").mkdir(exist_ok=True)
    (build / "bootloader" / "bootloader.bin").write_bytes(
        _esp_image(chip, b"WILDCAM-VIRTUAL-BOOT\0")
    )
    (build / "partition_table" / "partition-table.bin").write_bytes(
        partition_table_from_file(default_partitions_csv())
    )
    (build / "wildcam.bin").write_bytes(_esp_image(chip, VIRTUAL_APP_MARK + version.encode()))
    flasher_args = {
        "write_flash_args": ["--flash_mode", "dio", "--flash_size", "4MB", "--flash_freq", "40m"],
        "flash_settings": {"flash_mode": "dio", "flash_size": "4MB", "flash_freq": "40m"},
        "flash_files": {
            hex(SUPPORTED[chip]): "bootloader/bootloader.bin",
            hex(PARTITION_TABLE_OFFSET): "partition_table/partition-table.bin",
            "0x10000": "wildcam.bin",
        },
        "extra_esptool_args": {
            "after": "hard_reset",
            "before": "default_reset",
            "stub": True,
            "chip": chip,
        },
    }
    (build / "flasher_args.json").write_text(json.dumps(flasher_args, indent=4) + "\n")
    return build


class VirtualBoard:
    """A virtual unit's flash file; `boot()` starts the firmware core with the NVS settings."""

    def __init__(self, path: Path, chip: str = "esp32s3", mac: str = "24:0a:c4:00:00:01") -> None:
        self.path = path
        if not path.exists():
            create_virtual_flash(path, chip, mac)
        meta = json.loads(path.with_suffix(".json").read_text())
        self.chip, self.mac = meta["chip"], meta["mac"]

    @property
    def port(self) -> str:
        return f"virtual:{self.path}"

    def firmware_version(self) -> str:
        app = self.path.read_bytes()[0x10000 : 0x10000 + 4096]
        at = app.find(VIRTUAL_APP_MARK)
        if app[:1] != b"\xe9" or at < 0:
            raise FlashError(
                f"{self.port}: no WildCAM firmware in the app partition (flash it first)"
            )
        return app[at + len(VIRTUAL_APP_MARK) :].split(b"\0", 1)[0].decode()

    def _persist(self, nvs: dict[str, int | str]) -> None:
        """What nvs_set_*/nvs_commit do on the board: the partition in flash changes."""
        image = self.path.read_bytes()
        table = image[PARTITION_TABLE_OFFSET : PARTITION_TABLE_OFFSET + 0xC00]
        offset, size = nvs_partition(table, self.port)
        values = {k: (NVS_KEYS[k][0], v) for k, v in nvs.items() if k in NVS_KEYS}
        data = build_nvs_image(values, size)
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def boot(self, link: UnitLink, linger_ms: int = 1500, **kwargs: Any) -> CoreVirtualUnit:
        """Power on: check the firmware is there, read NVS, start the core (HELLO follows on wake)."""
        version = self.firmware_version()
        settings = read_unit_settings(self.path.read_bytes())
        if "unit_id" not in settings:
            raise FlashError(
                f"{self.port}: NVS has no unit_id (run `fieldstation esp32 configure`)"
            )
        nvs: dict[str, int | str] = {"linger_ms": linger_ms}
        nvs.update({k: v.value for k, v in settings.items() if isinstance(v.value, (int, str))})
        unit = CoreVirtualUnit(  # a board runs its firmware: the C core, never the fallback
            str(nvs["unit_id"]),
            link,
            firmware_version=version,
            chip=self.chip,
            mac=self.mac,
            chunk_size=int(nvs.get("chunk_size", 4096)),
            nvs=nvs,
            **kwargs,
        )
        unit.on_nvs_change = self._persist
        return unit
