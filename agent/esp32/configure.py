"""Configuring a unit: its NVS partition (PROTOCOL.md §9) built with esp-idf-nvs-partition-gen,
checked with our reader, and written at the offset the unit's own partition table gives."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent import protocol as p
from agent.esp32.flash import (
    PARTITION_TABLE_OFFSET,
    PARTITION_TABLE_SIZE,
    FlashError,
    FlashTarget,
    open_target,
)
from agent.esp32.nvs import NvsFormatError, NvsValue, read_nvs

NAMESPACE = "wildcam"
NVS_KEY_MAX = 15  # nvs_flash's NVS_KEY_NAME_MAX_SIZE - 1
# key -> (NVS type, max string bytes or (min, max) for numbers). Mirrors wc_config_keys in
# esp32/firmware/components/wildcam_core/src/wc_config.c; tests/esp32 checks they agree.
# key -> (NVS type, limit): the byte length for strings, the (low, high) range for numbers
NVS_KEYS: dict[str, tuple[str, int | tuple[int, int]]] = {
    "unit_id": ("string", 32),
    "station_id": ("string", 32),
    "wifi_ssid": ("string", 32),
    "wifi_pass": ("string", 64),
    "mqtt_uri": ("string", 128),
    "transport": ("u8", (0, 1)),
    "interval_s": ("u32", (0, 0xFFFFFFFF)),
    "frame_size": ("u8", (0, 0xFF)),
    "jpeg_quality": ("u8", (0, 63)),
    "pir_enabled": ("u8", (0, 1)),
    "quiet_start": ("u16", (0, 0xFFFF)),
    "quiet_end": ("u16", (0, 0xFFFF)),
    "tz_offset_min": ("i16", (-840, 840)),
    "chunk_size": ("u16", (1, 65529)),
    "ack_timeout_ms": ("u32", (100, 0xFFFFFFFF)),
    "max_attempts": ("u8", (1, 255)),
    "linger_ms": ("u32", (0, 0xFFFFFFFF)),
    "capture_seq": ("u32", (0, 0xFFFFFFFE)),
}
TRANSPORTS = {"serial": 0, "mqtt": 1}


class ConfigureError(ValueError):
    """A unit setting that cannot go into NVS; the message names the key and the limit."""


@dataclass
class UnitSettings:
    """What `fieldstation esp32 configure` puts into a unit's NVS."""

    unit_id: str
    transport: str = "serial"
    station_id: str = ""
    wifi_ssid: str = ""
    wifi_password: str = ""
    mqtt_uri: str = ""
    capture_interval_s: int = 300
    frame_size: int = 8
    jpeg_quality: int = 12
    pir_enabled: bool = True
    quiet: tuple[int, int] | None = None  # minutes after local midnight
    tz_offset_min: int = 0
    chunk_size: int = 4096

    def nvs_values(self) -> dict[str, tuple[str, int | str]]:
        """The NVS entries, validated; raises ConfigureError naming the bad key."""
        if not p.UNIT_ID_RE.fullmatch(self.unit_id):
            raise ConfigureError(f"unit_id {self.unit_id!r} must match {p.UNIT_ID_RE.pattern}")
        if self.station_id and not p.UNIT_ID_RE.fullmatch(self.station_id):
            raise ConfigureError(
                f"station_id {self.station_id!r} must match {p.UNIT_ID_RE.pattern}"
            )
        if self.transport not in TRANSPORTS:
            raise ConfigureError(
                f"transport {self.transport!r} is not one of {', '.join(TRANSPORTS)}"
            )
        if self.transport == "mqtt":
            missing = [
                name
                for name, v in (
                    ("--wifi-ssid", self.wifi_ssid),
                    ("--wifi-password-file", self.wifi_password),
                    ("--mqtt-uri", self.mqtt_uri),
                    ("--station", self.station_id),
                )
                if not v
            ]
            if missing:
                raise ConfigureError(f"an MQTT unit needs {', '.join(missing)}")
            if not re.match(r"^mqtts?://[^/\s]+", self.mqtt_uri):
                raise ConfigureError(f"mqtt_uri {self.mqtt_uri!r} must look like mqtt://host:1883")
        if self.wifi_password and not (
            8 <= len(self.wifi_password) <= 63
            or re.fullmatch(r"[0-9a-fA-F]{64}", self.wifi_password)
        ):
            raise ConfigureError(
                f"wifi_pass is {len(self.wifi_password)} characters; WPA2 needs 8-63 (or 64 hex digits)"
            )
        quiet_start, quiet_end = (
            self.quiet if self.quiet else (p.NO_QUIET_PERIOD, p.NO_QUIET_PERIOD)
        )
        raw: dict[str, int | str] = {
            "unit_id": self.unit_id,
            "transport": TRANSPORTS[self.transport],
            "interval_s": self.capture_interval_s,
            "frame_size": self.frame_size,
            "jpeg_quality": self.jpeg_quality,
            "pir_enabled": int(self.pir_enabled),
            "quiet_start": quiet_start,
            "quiet_end": quiet_end,
            "tz_offset_min": self.tz_offset_min,
            "chunk_size": self.chunk_size,
        }
        for key, value in (
            ("station_id", self.station_id),
            ("wifi_ssid", self.wifi_ssid),
            ("wifi_pass", self.wifi_password),
            ("mqtt_uri", self.mqtt_uri),
        ):
            if value:
                raw[key] = value
        return {key: (NVS_KEYS[key][0], check_value(key, value)) for key, value in raw.items()}


def check_value(key: str, value: int | str) -> int | str:
    """Check one value against its NVS key's type and limit."""
    if key not in NVS_KEYS:
        raise ConfigureError(f"{key!r} is not a unit NVS key")
    kind, limit = NVS_KEYS[key]
    if kind == "string":
        if not isinstance(value, str):
            raise ConfigureError(f"{key} must be text")
        size = len(value.encode("utf-8"))
        assert isinstance(limit, int)
        if size > limit:
            raise ConfigureError(f"{key} is {size} bytes; the unit keeps at most {limit}")
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigureError(f"{key} must be a whole number")
    assert isinstance(limit, tuple)
    lo, hi = limit
    if not lo <= value <= hi:
        raise ConfigureError(f"{key}={value} is outside {lo}..{hi}")
    if key in ("quiet_start", "quiet_end") and value != p.NO_QUIET_PERIOD and value >= 1440:
        raise ConfigureError(f"{key}={value} is not a minute of the day (0..1439)")
    return value


def build_nvs_image(
    values: dict[str, tuple[str, int | str]], size: int, namespace: str = NAMESPACE
) -> bytes:
    """An NVS partition image of `size` bytes holding `values` in `namespace`."""
    from esp_idf_nvs_partition_gen import nvs_partition_gen as gen

    if size % 4096 or size < 0x3000:
        raise ConfigureError(
            f"NVS partition size {size:#x} must be a multiple of 4096 and at least 0x3000"
        )
    for key in [namespace, *values]:
        if len(key) > NVS_KEY_MAX:
            raise ConfigureError(f"NVS key {key!r} is {len(key)} characters, at most {NVS_KEY_MAX}")
    out = io.BytesIO()
    try:
        # one page stays reserved for nvs_flash's garbage collection, as the generator's CLI does
        nvs = gen.nvs_open(out, size - 4096, gen.Page.VERSION2)
        gen.write_entry(nvs, namespace, "namespace", "", "")
        for key, (kind, value) in values.items():
            gen.write_entry(nvs, key, "data", kind, str(value))
        gen.nvs_close(nvs)
    except (gen.InputError, gen.InsufficientSizeError, gen.PageFullError, OverflowError) as exc:
        raise ConfigureError(f"the NVS format cannot hold these values: {exc}") from exc
    except Exception as exc:  # struct.error for numbers that do not fit their type
        if type(exc).__name__ == "error":
            raise ConfigureError(f"a number does not fit its NVS type: {exc}") from exc
        raise
    image = out.getvalue()
    if len(image) != size:
        raise ConfigureError(f"the generator made {len(image)} bytes for a {size}-byte partition")
    return image


def verify_image(
    image: bytes, values: dict[str, tuple[str, int | str]], namespace: str = NAMESPACE
) -> None:
    """Read the image back with our NVS reader: every key, type and value must round-trip."""
    try:
        got = read_nvs(image).get(namespace, {})
    except NvsFormatError as exc:
        raise ConfigureError(f"the NVS image does not read back: {exc}") from exc
    for key, (kind, value) in values.items():
        if got.get(key) != NvsValue(kind, value):
            raise ConfigureError(
                f"NVS key {key!r} reads back as {got.get(key)}, wrote {kind} {value!r}"
            )
    extra = set(got) - set(values)
    if extra:
        raise ConfigureError(f"the NVS image holds keys nobody wrote: {sorted(extra)}")


def nvs_partition(table: bytes, where: str) -> tuple[int, int]:
    """(offset, size) of the `nvs` data partition in a binary partition table (esp-idf-defs)."""
    from esp_idf_defs.partitions import InputError, PartitionTable

    if table[:2] != b"\xaa\x50":
        raise FlashError(
            f"no partition table at {PARTITION_TABLE_OFFSET:#x} on {where}: flash the firmware "
            "first (`fieldstation esp32 flash`)"
        )
    try:
        parts = PartitionTable.from_binary(table)
    except InputError as exc:
        raise FlashError(f"the partition table on {where} is damaged: {exc}") from exc
    for part in parts:
        if part.type == 1 and part.subtype == 2 and part.name == "nvs":  # data, nvs
            return part.offset, part.size
    raise FlashError(f"the partition table on {where} has no data partition named 'nvs'")


def partition_table_from_file(path: Path) -> bytes:
    """A partition table as binary, from a .csv or a .bin (e.g. build/partition_table/...)."""
    from esp_idf_defs.partitions import InputError, PartitionTable

    data = path.read_bytes()
    if data[:2] == b"\xaa\x50":
        return data
    try:
        table = PartitionTable.from_csv(data.decode("utf-8"))
        table.verify()
    except (InputError, UnicodeDecodeError) as exc:
        raise FlashError(f"{path} is not a partition table: {exc}") from exc
    return table.to_binary()


def default_partitions_csv() -> Path:
    return Path(__file__).resolve().parents[2] / "esp32" / "firmware" / "partitions.csv"


@dataclass
class ConfigureResult:
    offset: int
    size: int
    image: bytes
    written_to: str


def configure(
    settings: UnitSettings,
    port: str | None,
    *,
    dry_run_dir: Path | None = None,
    partitions: Path | None = None,
    chip: str = "auto",
    say: Callable[[str], None] = print,
    target_factory: Callable[[str, str, int], FlashTarget] = open_target,
) -> ConfigureResult:
    """Build, verify and write (or with dry_run_dir, save) a unit's NVS partition."""
    values = settings.nvs_values()
    target: FlashTarget | None = None
    try:
        if partitions is not None or dry_run_dir is not None and port is None:
            source = partitions or default_partitions_csv()
            table = partition_table_from_file(source)
            where = str(source)
        else:
            if port is None:
                raise ConfigureError("--port is needed (or --dry-run with --partitions)")
            target = target_factory(port, chip, 460800)
            say(f"unit      {target.port}  chip {target.chip}  MAC {target.mac}")
            table = target.read_flash(PARTITION_TABLE_OFFSET, PARTITION_TABLE_SIZE)
            where = target.port
        offset, size = nvs_partition(table, where)
        say(f"nvs       partition at {offset:#x}, {size // 1024} KiB (from {where})")
        image = build_nvs_image(values, size)
        verify_image(image, values)
        say(f"image     {len(values)} keys in namespace '{NAMESPACE}', read back and checked")
        if dry_run_dir is not None:
            dry_run_dir.mkdir(parents=True, exist_ok=True)
            out = dry_run_dir / f"nvs-{settings.unit_id}.bin"
            out.write_bytes(image)
            manifest = {
                "unit_id": settings.unit_id,
                "nvs_offset": hex(offset),
                "nvs_size": hex(size),
                "image": out.name,
                "keys": {k: v[0] for k, v in values.items()},
                "write_with": f"esptool --port PORT write-flash {offset:#x} {out.name}",
            }
            (dry_run_dir / f"nvs-{settings.unit_id}.json").write_text(
                json.dumps(manifest, indent=2) + "\n"
            )
            say(f"dry run   wrote {out} (not flashed)")
            return ConfigureResult(offset, size, image, str(out))
        assert target is not None
        target.write_flash([(offset, image)])
        say("write     ok, verified")
        target.reset()
        say("reset     done: the unit boots with its new configuration")
        return ConfigureResult(offset, size, image, target.port)
    finally:
        if target is not None:
            target.close()


def read_unit_settings(flash_image: bytes) -> dict[str, NvsValue]:
    """The wildcam namespace of a whole flash image (a virtual unit's flash file)."""
    table = flash_image[PARTITION_TABLE_OFFSET : PARTITION_TABLE_OFFSET + PARTITION_TABLE_SIZE]
    offset, size = nvs_partition(table, "the flash image")
    return read_nvs(flash_image[offset : offset + size]).get(NAMESPACE, {})
