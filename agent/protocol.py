"""The unit <-> station wire protocol (esp32/PROTOCOL.md), version 1.

Written here rather than taken from a library because the same few dozen lines must exist, byte for
byte, in the firmware's C core; keeping both small is what keeps them identical.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from enum import IntEnum
from typing import ClassVar

SYNC = b"\xa5\x5a"
VERSION = 1
HEADER = struct.Struct("<2sBBHH")  # sync, version, type, seq, length
HEADER_SIZE = HEADER.size  # 8
CRC_SIZE = 4
OVERHEAD = HEADER_SIZE + CRC_SIZE
MAX_PAYLOAD = 0xFFFF
CHUNK_HEAD_SIZE = 6  # capture_id u32, index u16
MAX_CHUNK = MAX_PAYLOAD - CHUNK_HEAD_SIZE  # 65529: the largest chunk one frame can carry
LEGACY_MAX_CHUNK = 16384  # what a unit whose HELLO has no max_chunk can send (PROTOCOL.md §3)
NO_CAPTURE = 0xFFFFFFFF
UNIT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")  # \Z: "$" would accept a final "\n"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"


class ProtocolError(ValueError):
    """A frame or payload that does not follow the protocol; the message says which field."""


class FrameType(IntEnum):
    HELLO = 0x01
    TELEMETRY = 0x02
    CONFIG_REPORT = 0x03
    CAPTURE_BEGIN = 0x10
    CAPTURE_CHUNK = 0x11
    ACK = 0x20
    NAK = 0x21
    CONFIG = 0x30
    CAPTURE_NOW = 0x31
    SLEEP_NOW = 0x32


class NakReason(IntEnum):
    CRC_MISMATCH = 1
    TOO_LARGE = 2
    TIMEOUT = 3
    MALFORMED = 4
    NOT_JPEG = 5
    STORAGE_FULL = 6
    STORAGE_ERROR = 7
    UNKNOWN_CAPTURE = 8
    BUSY = 9

    @property
    def label(self) -> str:
        return self.name.lower()


class TimeKind(IntEnum):
    BOOT_MS = 0
    EPOCH_MS = 1


class Trigger(IntEnum):
    TIMER = 0
    PIR = 1
    COMMAND = 2
    MANUAL = 3


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


# --- payload field codecs ------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError(f"{self.what}: payload ends inside field {field!r}")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: str, field: str) -> int:
        st = struct.Struct("<" + fmt)
        return st.unpack(self.take(st.size, field))[0]

    def string(self, field: str) -> str:
        n = self.unpack("B", field)
        raw = self.take(n, field)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{self.what}: field {field!r} is not UTF-8") from exc

    def rest(self) -> bytes:
        out = bytes(self.data[self.pos :])
        self.pos = len(self.data)
        return out


def _str(value: str, field: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ProtocolError(f"field {field!r} is {len(raw)} bytes, at most 255")
    return bytes([len(raw)]) + raw


def check_unit_id(unit_id: str) -> str:
    """`unit_id` unchanged, or ProtocolError when it is not a valid unit id."""
    if not UNIT_ID_RE.match(unit_id):
        raise ProtocolError(f"unit_id {unit_id!r} does not match {UNIT_ID_RE.pattern}")
    return unit_id


def mac_text(raw: bytes) -> str:
    """Six MAC bytes as the firmware prints them: 24:0a:c4:00:00:01."""
    return ":".join(f"{b:02x}" for b in raw)


def _mac_bytes(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise ProtocolError(f"mac {text!r} is not six hex octets")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError as exc:
        raise ProtocolError(f"mac {text!r} is not six hex octets") from exc


# --- messages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """Base of every payload; subclasses list their fields in wire order."""

    TYPE: ClassVar[FrameType]
    # (field name, struct code or "str" / "unit_id" / "mac" / "bytes"); a code starting with "?"
    # is an optional field appended in a later revision (§7): None when the payload ends before it
    LAYOUT: ClassVar[tuple[tuple[str, str], ...]]

    def encode_payload(self) -> bytes:
        out = bytearray()
        for name, code in self.LAYOUT:
            value = getattr(self, name)
            if code.startswith("?"):
                if value is None:
                    break  # optional fields are appended in order: the first absent ends them
                code = code[1:]
            if code == "unit_id":
                out += _str(check_unit_id(value), name)
            elif code == "str":
                out += _str(value, name)
            elif code == "mac":
                out += _mac_bytes(value)
            elif code == "bytes":
                out += value
            else:
                try:
                    out += struct.pack("<" + code, value)
                except struct.error as exc:
                    raise ProtocolError(f"field {name!r}={value!r} does not fit {code}") from exc
        return bytes(out)

    @classmethod
    def decode_payload(cls, payload: bytes) -> Message:
        r = _Reader(payload, cls.TYPE.name)
        values: dict[str, object] = {}
        for name, code in cls.LAYOUT:
            if code.startswith("?"):
                if r.pos == len(r.data):
                    break  # an older sender: this and later optional fields keep None
                code = code[1:]
            if code == "unit_id":
                uid = r.string(name)
                if not UNIT_ID_RE.match(uid):
                    raise ProtocolError(f"{cls.TYPE.name}: unit_id {uid!r} is not a valid unit id")
                values[name] = uid
            elif code == "str":
                values[name] = r.string(name)
            elif code == "mac":
                values[name] = mac_text(r.take(6, name))
            elif code == "bytes":
                values[name] = r.rest()
            else:
                values[name] = r.unpack(code, name)
        # trailing bytes are ignored on purpose: newer minor revisions append fields (§7)
        msg = cls(**values)
        msg.validate()
        return msg

    def validate(self) -> None:
        """Check value ranges beyond what the field widths already enforce."""

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        for f in fields(self):
            if out[f.name] is None:
                del out[f.name]  # an absent optional field, as on the wire
            elif isinstance(out[f.name], bytes):
                out[f.name] = out[f.name].hex()
        return out


@dataclass(frozen=True)
class Hello(Message):
    TYPE = FrameType.HELLO
    LAYOUT = (
        ("unit_id", "unit_id"),
        ("firmware_version", "str"),
        ("chip", "str"),
        ("mac", "mac"),
        ("protocol_version", "B"),
        ("max_chunk", "?H"),
    )
    unit_id: str
    firmware_version: str
    chip: str
    mac: str
    protocol_version: int = VERSION
    max_chunk: int | None = None  # largest chunk the unit can send; None: an older unit

    @property
    def sendable_chunk(self) -> int:
        """The largest chunk this unit can send (16 KiB for units that do not say)."""
        return LEGACY_MAX_CHUNK if self.max_chunk is None else self.max_chunk

    def validate(self) -> None:
        if self.max_chunk == 0:
            raise ProtocolError("HELLO: max_chunk is 0")


@dataclass(frozen=True)
class Telemetry(Message):
    TYPE = FrameType.TELEMETRY
    LAYOUT = (
        ("unit_id", "unit_id"),
        ("battery_mv", "H"),
        ("temperature_cc", "h"),
        ("rssi_dbm", "b"),
        ("uptime_s", "I"),
        ("pending_captures", "H"),
    )
    unit_id: str
    battery_mv: int
    temperature_cc: int = -32768
    rssi_dbm: int = 0
    uptime_s: int = 0
    pending_captures: int = 0

    @property
    def temperature_c(self) -> float | None:
        return None if self.temperature_cc == -32768 else self.temperature_cc / 100


_CONFIG_LAYOUT = (
    ("capture_interval_s", "I"),
    ("frame_size", "B"),
    ("jpeg_quality", "B"),
    ("pir_enabled", "B"),
    ("sleep_start_min", "H"),
    ("sleep_end_min", "H"),
    ("station_time_ms", "Q"),
    ("chunk_size", "?H"),
)
NO_QUIET_PERIOD = 0xFFFF
_CHUNK_HEAD = struct.Struct("<IH")  # capture_id, index (CHUNK_HEAD_SIZE bytes)


def _validate_config(msg: Config | ConfigReport) -> None:
    if msg.jpeg_quality > 63:
        raise ProtocolError(f"jpeg_quality {msg.jpeg_quality} is above 63")
    if msg.pir_enabled not in (0, 1):
        raise ProtocolError(f"pir_enabled {msg.pir_enabled} is not 0 or 1")
    for name in ("sleep_start_min", "sleep_end_min"):
        v = getattr(msg, name)
        if v != NO_QUIET_PERIOD and v >= 24 * 60:
            raise ProtocolError(f"{name} {v} is not a minute of the day")
    if msg.chunk_size is not None and not 1 <= msg.chunk_size <= MAX_CHUNK:
        raise ProtocolError(f"chunk_size {msg.chunk_size} is not 1 … {MAX_CHUNK}")


@dataclass(frozen=True)
class Config(Message):
    TYPE = FrameType.CONFIG
    LAYOUT = _CONFIG_LAYOUT
    capture_interval_s: int
    frame_size: int
    jpeg_quality: int
    pir_enabled: int = 1
    sleep_start_min: int = NO_QUIET_PERIOD
    sleep_end_min: int = NO_QUIET_PERIOD
    station_time_ms: int = 0
    chunk_size: int | None = None  # CONFIG: chunk to use from now on; None: keep the unit's own

    def validate(self) -> None:
        _validate_config(self)


@dataclass(frozen=True)
class ConfigReport(Message):
    TYPE = FrameType.CONFIG_REPORT
    LAYOUT = (("unit_id", "unit_id"), *_CONFIG_LAYOUT)
    unit_id: str
    capture_interval_s: int
    frame_size: int
    jpeg_quality: int
    pir_enabled: int = 1
    sleep_start_min: int = NO_QUIET_PERIOD
    sleep_end_min: int = NO_QUIET_PERIOD
    station_time_ms: int = 0
    chunk_size: int | None = None  # the chunk the unit now sends; None: an older unit

    def validate(self) -> None:
        _validate_config(self)


@dataclass(frozen=True)
class CaptureBegin(Message):
    TYPE = FrameType.CAPTURE_BEGIN
    LAYOUT = (
        ("unit_id", "unit_id"),
        ("capture_id", "I"),
        ("total_size", "I"),
        ("image_crc32", "I"),
        ("chunk_size", "H"),
        ("unit_time", "Q"),
        ("time_kind", "B"),
        ("trigger", "B"),
    )
    unit_id: str
    capture_id: int
    total_size: int
    image_crc32: int
    chunk_size: int
    unit_time: int
    time_kind: int = TimeKind.BOOT_MS
    trigger: int = Trigger.TIMER

    @property
    def chunk_count(self) -> int:
        return -(-self.total_size // self.chunk_size)

    def validate(self) -> None:
        if self.total_size == 0:
            raise ProtocolError("CAPTURE_BEGIN: total_size is 0")
        if self.chunk_size == 0:
            raise ProtocolError("CAPTURE_BEGIN: chunk_size is 0")
        if self.capture_id == NO_CAPTURE:
            raise ProtocolError("CAPTURE_BEGIN: capture_id 0xFFFFFFFF is reserved")
        if self.time_kind not in (0, 1):
            raise ProtocolError(f"CAPTURE_BEGIN: time_kind {self.time_kind} is not 0 or 1")
        if self.trigger > 3:
            raise ProtocolError(f"CAPTURE_BEGIN: trigger {self.trigger} is unknown")


@dataclass(frozen=True)
class CaptureChunk(Message):
    TYPE = FrameType.CAPTURE_CHUNK
    LAYOUT = (("capture_id", "I"), ("index", "H"), ("data", "bytes"))
    capture_id: int
    index: int
    data: bytes

    @classmethod
    def decode_payload(cls, payload: bytes) -> CaptureChunk:
        """Most of the traffic: decoded without the generic field walk."""
        if len(payload) < _CHUNK_HEAD.size:
            raise ProtocolError("CAPTURE_CHUNK: payload ends inside field 'index'")
        capture_id, index = _CHUNK_HEAD.unpack_from(payload)
        msg = cls(capture_id, index, payload[_CHUNK_HEAD.size :])
        msg.validate()
        return msg

    def validate(self) -> None:
        if not self.data:
            raise ProtocolError("CAPTURE_CHUNK: empty data")


@dataclass(frozen=True)
class Ack(Message):
    TYPE = FrameType.ACK
    LAYOUT = (("capture_id", "I"), ("status", "B"))
    capture_id: int
    status: int = 0  # 0 stored now, 1 already stored

    def validate(self) -> None:
        if self.status not in (0, 1):
            raise ProtocolError(f"ACK: status {self.status} is not 0 or 1")


@dataclass(frozen=True)
class Nak(Message):
    TYPE = FrameType.NAK
    LAYOUT = (("capture_id", "I"), ("reason", "B"), ("detail", "str"))
    capture_id: int
    reason: int
    detail: str = ""

    def validate(self) -> None:
        if self.reason not in NakReason._value2member_map_:
            raise ProtocolError(f"NAK: reason {self.reason} is unknown")


@dataclass(frozen=True)
class CaptureNow(Message):
    TYPE = FrameType.CAPTURE_NOW
    LAYOUT = (("request_id", "I"),)
    request_id: int = 0


@dataclass(frozen=True)
class SleepNow(Message):
    TYPE = FrameType.SLEEP_NOW
    LAYOUT = (("duration_s", "I"),)
    duration_s: int = 0


MESSAGES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Telemetry,
        ConfigReport,
        CaptureBegin,
        CaptureChunk,
        Ack,
        Nak,
        Config,
        CaptureNow,
        SleepNow,
    )
}

UNIT_TO_STATION = frozenset(
    {
        FrameType.HELLO,
        FrameType.TELEMETRY,
        FrameType.CONFIG_REPORT,
        FrameType.CAPTURE_BEGIN,
        FrameType.CAPTURE_CHUNK,
    }
)

# MQTT topic suffix -> frame types allowed on it (PROTOCOL.md §4)
MQTT_UP_TOPICS: dict[str, frozenset[FrameType]] = {
    "hello": frozenset({FrameType.HELLO, FrameType.CONFIG_REPORT}),
    "telemetry": frozenset({FrameType.TELEMETRY}),
    "capture": frozenset({FrameType.CAPTURE_BEGIN, FrameType.CAPTURE_CHUNK}),
}


# --- frames --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    type: FrameType
    seq: int
    payload: bytes

    def message(self) -> Message:
        return MESSAGES[self.type].decode_payload(self.payload)


def encode_frame(msg: Message, seq: int) -> bytes:
    """Encode a message as one frame with the given sequence number."""
    payload = msg.encode_payload()
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload is {len(payload)} bytes, at most {MAX_PAYLOAD}")
    body = HEADER.pack(SYNC, VERSION, msg.TYPE, seq & 0xFFFF, len(payload)) + payload
    return body + struct.pack("<I", crc32(body[2:]))


def decode_frame(data: bytes, max_payload: int = MAX_PAYLOAD) -> Frame:
    """Decode exactly one frame (an MQTT message); raise ProtocolError naming what is wrong."""
    if len(data) < OVERHEAD:
        raise ProtocolError(f"frame is {len(data)} bytes, shorter than the {OVERHEAD}-byte minimum")
    sync, version, ftype, seq, length = HEADER.unpack_from(data)
    if sync != SYNC:
        raise ProtocolError(f"frame does not start with sync bytes A5 5A (got {sync.hex()})")
    if version != VERSION:
        raise ProtocolError(f"frame version {version} is not supported (this station speaks 1)")
    if ftype not in MESSAGES:
        raise ProtocolError(f"frame type 0x{ftype:02x} is unknown")
    if length > max_payload:
        raise ProtocolError(f"frame length {length} is above the limit {max_payload}")
    if len(data) != OVERHEAD + length:
        raise ProtocolError(f"frame length field says {length} but {len(data) - OVERHEAD} follow")
    (crc,) = struct.unpack_from("<I", data, HEADER_SIZE + length)
    actual = crc32(data[2 : HEADER_SIZE + length])
    if crc != actual:
        raise ProtocolError(f"frame CRC mismatch (frame says {crc:08x}, bytes give {actual:08x})")
    return Frame(FrameType(ftype), seq, bytes(data[HEADER_SIZE : HEADER_SIZE + length]))


class StreamDecoder:
    """Finds frames in a byte stream (serial), resynchronising after noise (PROTOCOL.md §1)."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        self.noise_bytes = 0
        self.crc_errors = 0

    def feed(self, data: bytes) -> Iterator[Frame]:
        """Add bytes; yield every complete, CRC-valid frame now in the buffer."""
        self._buf += data
        buf = self._buf
        pos = 0  # consumed bytes are dropped once at the end, not frame by frame
        try:
            while True:
                start = buf.find(SYNC, pos)
                if start < 0:
                    # keep a trailing A5: it may be the first half of a sync split across reads
                    keep = 1 if buf[-1:] == SYNC[:1] else 0
                    rest = max(pos, len(buf) - keep)  # never step back into a consumed frame
                    self.noise_bytes += rest - pos
                    pos = rest
                    return
                self.noise_bytes += start - pos
                pos = start
                if len(buf) - pos < HEADER_SIZE:
                    return
                _, version, ftype, seq, length = HEADER.unpack_from(buf, pos)
                if version != VERSION or ftype not in MESSAGES or length > self.max_payload:
                    self.noise_bytes += 1
                    pos += 1
                    continue
                end = pos + HEADER_SIZE + length + CRC_SIZE
                if len(buf) < end:
                    return
                (crc,) = struct.unpack_from("<I", buf, end - CRC_SIZE)
                with memoryview(buf) as view:
                    actual = zlib.crc32(view[pos + 2 : end - CRC_SIZE]) & 0xFFFFFFFF
                if crc != actual:
                    self.crc_errors += 1
                    self.noise_bytes += 1
                    pos += 1
                    continue
                frame = Frame(FrameType(ftype), seq, bytes(buf[pos + HEADER_SIZE : end - CRC_SIZE]))
                pos = end
                yield frame
        finally:
            if pos:
                del buf[:pos]

    @property
    def buffered(self) -> int:
        return len(self._buf)


def negotiate_chunk(hello: Hello, *limits: int) -> int:
    """The chunk size a unit should use: the smallest of what it can send and every limit."""
    return max(1, min(hello.sendable_chunk, MAX_CHUNK, *limits))


def is_jpeg(data: bytes) -> bool:
    """True when the bytes start with SOI and end with EOI (trailing padding after EOI tolerated)."""
    return data[:2] == JPEG_SOI and JPEG_EOI in data[-16:]


def chunk_capture(
    unit_id: str,
    capture_id: int,
    jpeg: bytes,
    chunk_size: int,
    unit_time: int,
    time_kind: int = TimeKind.BOOT_MS,
    trigger: int = Trigger.TIMER,
) -> list[Message]:
    """Split one JPEG into CAPTURE_BEGIN plus CAPTURE_CHUNK messages (the unit's side)."""
    begin = CaptureBegin(
        unit_id=unit_id,
        capture_id=capture_id,
        total_size=len(jpeg),
        image_crc32=crc32(jpeg),
        chunk_size=chunk_size,
        unit_time=unit_time,
        time_kind=time_kind,
        trigger=trigger,
    )
    msgs: list[Message] = [begin]
    for i in range(begin.chunk_count):
        msgs.append(CaptureChunk(capture_id, i, jpeg[i * chunk_size : (i + 1) * chunk_size]))
    return msgs
