"""MQTT 3.1.1 and 5 packets: what the station's link to the broker writes and reads.

Only the packets a QoS 1 subscriber and publisher needs (CONNECT, CONNACK, SUBSCRIBE, SUBACK,
PUBLISH, PUBACK, PINGREQ, PINGRESP, DISCONNECT). Every capture costs six packets on this link, so
a packet is a few slices of one buffer here, not the objects a general client builds for it.
Bytes from the broker are outside bytes: anything malformed raises `MqttProtocolError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14
MAX_REMAINING = 268_435_455  # the largest remaining length four varint bytes can say

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"

# MQTT 5 property ids the link reads or writes, and how every property id is laid out (to skip)
SESSION_EXPIRY = 0x11
SERVER_KEEP_ALIVE = 0x13
RECEIVE_MAXIMUM = 0x21
MAXIMUM_PACKET_SIZE = 0x27
REASON_STRING = 0x1F
_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
_PROPERTY_KIND = {
    0x01: _BYTE, 0x02: _U32, 0x03: _STR, 0x08: _STR, 0x09: _BIN, 0x0B: _VARINT, 0x11: _U32,
    0x12: _STR, 0x13: _U16, 0x15: _STR, 0x16: _BIN, 0x17: _BYTE, 0x18: _U32, 0x19: _BYTE,
    0x1A: _STR, 0x1C: _STR, 0x1F: _STR, 0x21: _U16, 0x22: _U16, 0x23: _U16, 0x24: _BYTE,
    0x25: _BYTE, 0x26: _PAIR, 0x27: _U32, 0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}  # fmt: skip


class MqttProtocolError(ValueError):
    """The broker sent bytes that are not the MQTT this link speaks."""


# --- writing -------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


def connect(
    client_id: str,
    *,
    v5: bool,
    keepalive_s: int,
    session_expiry_s: int,
    max_packet: int,
    username: str = "",
    password: str | None = None,
) -> bytes:
    """CONNECT for a persistent session: clean start off, so QoS 1 messages wait for us at the
    broker while the station restarts (MQTT 5: for `session_expiry_s`)."""
    flags = (0x80 if username else 0) | (0x40 if password is not None and username else 0)
    head = _str("MQTT") + bytes((5 if v5 else 4, flags)) + struct.pack("!H", keepalive_s)
    if v5:
        # Maximum Packet Size: the broker drops what we could not take instead of sending it
        props = struct.pack(
            "!BIBI", SESSION_EXPIRY, session_expiry_s, MAXIMUM_PACKET_SIZE, max_packet
        )
        head += _varint(len(props)) + props
    payload = _str(client_id)
    if username:
        payload += _str(username)
        if password is not None:
            payload += _str(password)
    return _packet(CONNECT << 4, head + payload)


def subscribe(packet_id: int, topics: list[str], *, v5: bool) -> bytes:
    body = struct.pack("!H", packet_id) + (b"\x00" if v5 else b"")
    for topic in topics:
        body += _str(topic) + b"\x01"  # maximum QoS 1
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def publish(
    topic: str, payload: bytes, packet_id: int, *, v5: bool, retain: bool = False, dup: bool = False
) -> bytes:
    """A QoS 1 PUBLISH."""
    body = _str(topic) + struct.pack("!H", packet_id) + (b"\x00" if v5 else b"")
    first = (PUBLISH << 4) | (0x08 if dup else 0) | 0x02 | (0x01 if retain else 0)
    return bytes((first,)) + _varint(len(body) + len(payload)) + body + payload


def puback(packet_id: int) -> bytes:
    # the short form is success in both versions
    return struct.pack("!BBH", PUBACK << 4, 2, packet_id)


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    type: int
    flags: int
    body: bytes


@dataclass(frozen=True)
class Oversized:
    """A packet over the reader's limit: its first bytes only (topic and packet id), the rest
    skipped as it arrives, so one bad message cannot fill the station's memory."""

    type: int
    flags: int
    head: bytes
    size: int


@dataclass
class PacketReader:
    """Whole packets out of the byte stream, however the socket cut it."""

    limit: int
    _buf: bytearray = field(default_factory=bytearray)
    _skip: int = 0  # bytes of an oversized packet still to throw away

    def feed(self, data: bytes) -> Iterator[Packet | Oversized]:
        buf = self._buf
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        buf += data
        pos = 0
        try:
            while True:
                got = _header(buf, pos)
                if got is None:
                    break
                first, remaining, start = got
                if remaining > self.limit:
                    head = 256  # room for a topic and the packet id
                    if len(buf) - start < min(remaining, head):
                        break
                    big = Oversized(
                        first >> 4, first & 0x0F, bytes(buf[start : start + head]), remaining
                    )
                    # consumed before it is handed out: a reader that stops early keeps the rest
                    have = len(buf) - start
                    if have >= remaining:
                        pos = start + remaining
                    else:
                        self._skip = remaining - have
                        pos = len(buf)
                    yield big
                    continue
                end = start + remaining
                if end > len(buf):
                    break
                packet = Packet(first >> 4, first & 0x0F, bytes(buf[start:end]))
                pos = end
                yield packet
        finally:
            del buf[:pos]


def _header(buf: bytearray, pos: int) -> tuple[int, int, int] | None:
    """(first byte, remaining length, body start) if the fixed header is all here."""
    if len(buf) - pos < 2:
        return None
    remaining, shift, i = 0, 0, pos + 1
    while True:
        if i >= len(buf):
            return None
        byte = buf[i]
        remaining |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return buf[pos], remaining, i
        shift += 7
        if shift > 21:
            raise MqttProtocolError("remaining length longer than four bytes")


def _read_varint(body: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    for _ in range(4):
        if pos >= len(body):
            raise MqttProtocolError("variable byte integer runs past the packet")
        byte = body[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise MqttProtocolError("variable byte integer longer than four bytes")


def _u16(body: bytes, pos: int) -> int:
    if pos + 2 > len(body):
        raise MqttProtocolError("packet ends inside a two-byte integer")
    return int.from_bytes(body[pos : pos + 2], "big")


def _skip_str(body: bytes, pos: int) -> int:
    end = pos + 2 + _u16(body, pos)
    if end > len(body):
        raise MqttProtocolError("string runs past the packet")
    return end


def properties(body: bytes, pos: int) -> tuple[dict[int, int | bytes], int]:
    """MQTT 5 properties at `pos`: {id: value} (numbers as int, strings as raw bytes; a repeated
    user property keeps its last), and the position after them."""
    length, pos = _read_varint(body, pos)
    end = pos + length
    if end > len(body):
        raise MqttProtocolError("properties run past the packet")
    out: dict[int, int | bytes] = {}
    while pos < end:
        pid = body[pos]
        kind = _PROPERTY_KIND.get(pid)
        pos += 1
        if kind is None:
            raise MqttProtocolError(f"unknown property 0x{pid:02x}")
        if kind == _BYTE:
            if pos >= end:
                raise MqttProtocolError("property runs past its list")
            out[pid], pos = body[pos], pos + 1
        elif kind == _U16:
            out[pid], pos = _u16(body, pos), pos + 2
        elif kind == _U32:
            if pos + 4 > end:
                raise MqttProtocolError("property runs past its list")
            out[pid], pos = int.from_bytes(body[pos : pos + 4], "big"), pos + 4
        elif kind == _VARINT:
            out[pid], pos = _read_varint(body, pos)
        elif kind == _PAIR:
            pos = _skip_str(body, _skip_str(body, pos))
        else:  # _STR, _BIN
            nxt = _skip_str(body, pos)
            out[pid], pos = body[pos + 2 : nxt], nxt
        if pos > end:
            raise MqttProtocolError("property runs past its list")
    return out, end


@dataclass(frozen=True)
class Connack:
    session_present: bool
    reason: int  # 0 accepted; 3.1.1 return codes 1-5, MQTT 5 reason codes >= 0x80 refuse
    props: dict[int, int | bytes]

    @property
    def refused(self) -> bool:
        return self.reason != 0


CONNACK_WORDS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x95: "packet too large",
    0x97: "quota exceeded",
}


def read_connack(body: bytes, *, v5: bool) -> Connack:
    if len(body) < 2:
        raise MqttProtocolError("CONNACK shorter than two bytes")
    props: dict[int, int | bytes] = {}
    if v5 and len(body) > 2:
        props, _ = properties(body, 2)
    return Connack(bool(body[0] & 0x01), body[1], props)


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    packet_id: int  # 0 for QoS 0
    qos: int


def read_publish(flags: int, body: bytes, *, v5: bool) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MqttProtocolError("PUBLISH with QoS 3")
    end = _skip_str(body, 0)
    try:
        topic = body[2:end].decode()
    except UnicodeDecodeError as exc:
        raise MqttProtocolError("PUBLISH topic is not UTF-8") from exc
    packet_id = 0
    if qos:
        packet_id = _u16(body, end)
        end += 2
    if v5:
        _, end = properties(body, end)
    return Publish(topic, body[end:], packet_id, qos)


def publish_head(flags: int, head: bytes, *, v5: bool) -> tuple[str, int]:
    """Topic and packet id of an oversized PUBLISH from its first bytes ("" if cut off)."""
    try:
        end = _skip_str(head, 0)
        qos = (flags >> 1) & 0x03
        return head[2:end].decode(errors="replace"), _u16(head, end) if qos else 0
    except MqttProtocolError:
        return "", 0


def read_packet_id(body: bytes) -> int:
    """PUBACK's and SUBACK's packet id."""
    return _u16(body, 0)


def read_suback_codes(body: bytes, *, v5: bool) -> bytes:
    pos = 2
    if v5:
        _, pos = properties(body, pos)
    return body[pos:]
