"""Victron VE.Direct, the text protocol of Victron solar charge controllers and battery monitors.

Our own small parser (there is no maintained library for the text protocol with checksums and
interleaved HEX frames): records are `\\r\\n<label>\\t<value>`, a block ends with
`\\r\\nChecksum\\t<byte>` and the bytes of a whole block sum to 0 modulo 256. HEX frames (`:` to
`\\n`) may appear between records and are not part of the sum. Modelled on Victron's reference
frame handler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.power.settings import SourceConfig
from agent.power.sources import Reading, SourceError
from agent.power.sources.hwmon import soc_from_voltage

log = logging.getLogger(__name__)

MAX_LABEL = 16
MAX_VALUE = 40
# CS (state of operation) values in which energy flows into the battery
CHARGING_STATES = {3: "bulk", 4: "absorption", 5: "float", 7: "equalize", 247: "auto equalize"}
CS_NAMES = {0: "off", 2: "fault", 245: "starting up", 252: "external control", **CHARGING_STATES}

_IDLE, _BEGIN, _NAME, _VALUE, _CHECKSUM, _HEX = range(6)


@dataclass
class ParserCounts:
    blocks: int = 0
    bad_checksum: int = 0  # dropped: the bytes did not sum to 0
    malformed: int = 0  # a record too long or a block without a checksum record
    hex_frames: int = 0


class VeDirectParser:
    """Feed bytes, get each block whose checksum holds as a dict of label -> value."""

    def __init__(self) -> None:
        self.counts = ParserCounts()
        self.resync()

    def resync(self) -> None:
        """Forget a partial block (the port was reopened); the counts go on."""
        self._state = _IDLE
        self._saved = _IDLE
        self._sum = 0
        self._name = bytearray()
        self._value = bytearray()
        self._block: dict[str, str] = {}
        self._synced = False  # the first block after opening usually starts mid-way

    def feed(self, data: bytes) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for b in data:
            if b == 0x3A and self._state not in (_CHECKSUM, _HEX):  # ':' starts a HEX frame
                self._saved, self._state = self._state, _HEX
                continue
            if self._state == _HEX:
                if b == 0x0A:
                    self.counts.hex_frames += 1
                    self._state = self._saved
                continue
            self._sum = (self._sum + b) & 0xFF
            if self._state == _IDLE:
                if b == 0x0A:
                    self._state = _BEGIN
            elif self._state == _BEGIN:
                self._name = bytearray([b])
                self._state = _NAME
            elif self._state == _NAME:
                if b == 0x09:
                    if self._name == b"Checksum":
                        self._state = _CHECKSUM
                    else:
                        self._value = bytearray()
                        self._state = _VALUE
                elif len(self._name) >= MAX_LABEL:
                    self._abandon()
                else:
                    self._name.append(b)
            elif self._state == _VALUE:
                if b == 0x0A:
                    self._block[self._name.decode("ascii", "replace")] = self._value.decode(
                        "ascii", "replace"
                    )
                    self._state = _BEGIN
                elif b == 0x0D:
                    pass
                elif len(self._value) >= MAX_VALUE:
                    self._abandon()
                else:
                    self._value.append(b)
            elif self._state == _CHECKSUM:
                if self._sum == 0 and self._block:
                    self.counts.blocks += 1
                    out.append(self._block)
                elif self._synced:
                    self.counts.bad_checksum += 1
                    log.debug("VE.Direct block dropped: checksum off by %d", self._sum)
                self._synced = True
                self._block = {}
                self._sum = 0
                self._state = _IDLE
        return out

    def _abandon(self) -> None:
        if self._synced:
            self.counts.malformed += 1
        self._block = {}
        self._sum = 0
        self._state = _IDLE


def encode_block(fields: dict[str, str]) -> bytes:
    """A block as a Victron device sends it, checksum byte included (tests and the bench use it)."""
    body = b"".join(f"\r\n{k}\t{v}".encode("ascii") for k, v in fields.items())
    body += b"\r\nChecksum\t"
    return body + bytes([(256 - sum(body) % 256) % 256])


def reading_from_block(
    block: dict[str, str], source: str, at: float, config: SourceConfig
) -> Reading:
    """Turn one block into a Reading; SourceError when it holds no battery voltage."""
    try:
        volts = int(block["V"]) / 1000.0
    except (KeyError, ValueError):
        raise SourceError(f"VE.Direct block without a usable V field: {block.get('V')!r}") from None
    amps = _num(block, "I", 1000.0)
    soc_permille = _num(block, "SOC", 10.0)  # ‰ on the wire, % here
    cs = _num(block, "CS", 1.0)
    ppv = _num(block, "PPV", 1.0)
    if soc_permille is not None:
        soc = soc_permille
    else:
        rest = volts - (amps or 0.0) * config.internal_resistance_ohm
        soc = round(soc_from_voltage(config.chemistry, rest / config.cells), 1)
    charging: bool | None = None
    if cs is not None:
        charging = int(cs) in CHARGING_STATES
    elif amps is not None:
        charging = amps > 0.05
    detail: dict[str, str | float] = {}
    if cs is not None:
        detail["charger"] = CS_NAMES.get(int(cs), f"cs {int(cs)}")
    for key, label, scale in (
        ("ERR", "error", 1.0),
        ("VPV", "panel_v", 1000.0),
        ("H19", "yield_total_kwh", 100.0),
        ("H20", "yield_today_kwh", 100.0),
        ("H21", "max_power_today_w", 1.0),
        ("H22", "yield_yesterday_kwh", 100.0),
        ("H23", "max_power_yesterday_w", 1.0),
    ):
        value = _num(block, key, scale)
        if value is not None:
            detail[label] = value
    power = _num(block, "P", 1.0)
    if power is None and amps is not None:
        power = volts * amps
    return Reading(
        source,
        at,
        soc=soc,
        voltage_v=volts,
        current_a=amps,
        power_w=power,
        charging=charging,
        solar_w=ppv,
        detail=detail,
    )


def _num(block: dict[str, str], key: str, scale: float) -> float | None:
    raw = block.get(key)
    if raw is None or raw == "---":
        return None
    try:
        return int(raw) / scale
    except ValueError:
        return None


class VeDirectSource:
    """A reader thread on the serial port keeps the latest good block; `read` returns it."""

    def __init__(self, config: SourceConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.name = f"vedirect:{config.port.rsplit('/', 1)[-1]}"
        self.parser = VeDirectParser()
        self._latest: tuple[float, dict[str, str]] | None = None
        self._error: str | None = "no VE.Direct block received yet"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._port: Any = None
        self._thread = threading.Thread(target=self._run, name="power-vedirect", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import serial

        while not self._stop.is_set():
            try:
                port = serial.Serial(self.config.port, self.config.baudrate, timeout=None)
            except (OSError, serial.SerialException) as exc:
                self._error = f"cannot open {self.config.port}: {exc}"
                self._stop.wait(10.0)
                continue
            self.parser.resync()
            self._port = port
            try:
                while not self._stop.is_set():
                    data = port.read(1)  # sleeps until the device talks (or close cancels it)
                    if not data:
                        continue
                    # a block takes ~0.1 s at 19200 baud: one short pause reads it whole,
                    # one wake-up per block instead of one per byte
                    self._stop.wait(0.15)
                    data += port.read(port.in_waiting)
                    blocks = self.parser.feed(data)
                    if blocks:
                        with self._lock:
                            self._latest = (self.clock(), blocks[-1])
            except (OSError, serial.SerialException) as exc:
                self._error = f"{self.config.port}: {exc}"
                log.warning("VE.Direct %s: %s; reopening", self.config.port, exc)
            finally:
                self._port = None
                port.close()
            self._stop.wait(2.0)

    def read(self) -> Reading:
        with self._lock:
            latest = self._latest
        if latest is None:
            raise SourceError(self._error or "no VE.Direct block yet")
        at, block = latest
        return reading_from_block(block, self.name, at, self.config)

    @property
    def connected(self) -> bool:
        """True while the serial port is open."""
        return self._port is not None

    def wait(self, timeout: float) -> bool:
        """True once a block has arrived (the CLI waits a little for one when the daemon is down)."""
        deadline = time.monotonic() + timeout
        while self._latest is None and time.monotonic() < deadline:
            self._stop.wait(0.1)
        return self._latest is not None

    def close(self) -> None:
        self._stop.set()
        port = self._port
        if port is not None:
            port.cancel_read()  # wakes the reader out of its blocking read at once
        self._thread.join(timeout=7)
