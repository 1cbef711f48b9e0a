"""`fieldstation esp32 monitor`: a unit's serial line, its log text and protocol frames apart."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from agent import protocol as p


class LineSplitter:
    """Splits a unit's UART stream into log text lines and CRC-valid protocol frames."""

    # a whole frame: units send chunks as large as the station negotiates (PROTOCOL.md §3); log
    # text is ASCII, so a false A5 5A sync in it is rare
    def __init__(self, max_payload: int = p.MAX_PAYLOAD) -> None:
        self.buf = bytearray()
        self.text = bytearray()
        self.max_payload = max_payload

    def feed(self, data: bytes) -> Iterator[tuple[str, object]]:
        """Yield ('text', str) for each complete log line and ('frame', Frame) for each frame."""
        self.buf += data
        while True:
            start = self.buf.find(p.SYNC)
            if start < 0:
                keep = 1 if self.buf[-1:] == p.SYNC[:1] else 0
                yield from self._text(bytes(self.buf[: len(self.buf) - keep]))
                del self.buf[: len(self.buf) - keep]
                return
            yield from self._text(bytes(self.buf[:start]))
            del self.buf[:start]
            if len(self.buf) < p.HEADER_SIZE:
                return
            _, version, ftype, _, length = p.HEADER.unpack_from(self.buf)
            if version != p.VERSION or ftype not in p.MESSAGES or length > self.max_payload:
                yield from self._text(bytes(self.buf[:1]))
                del self.buf[:1]
                continue
            end = p.OVERHEAD + length
            if len(self.buf) < end:
                return
            try:
                frame = p.decode_frame(bytes(self.buf[:end]), self.max_payload)
            except p.ProtocolError:
                yield from self._text(bytes(self.buf[:1]))
                del self.buf[:1]
                continue
            del self.buf[:end]
            yield "frame", frame

    def _text(self, data: bytes) -> Iterator[tuple[str, object]]:
        self.text += data
        while b"\n" in self.text:
            line, _, rest = bytes(self.text).partition(b"\n")
            self.text = bytearray(rest)
            yield "text", line.rstrip(b"\r").decode("utf-8", errors="replace")


def describe(frame: p.Frame) -> str:
    """One line for a frame: type, seq and its fields (chunk data shown by size)."""
    try:
        msg = frame.message()
    except p.ProtocolError as exc:
        return f"{frame.type.name} seq={frame.seq} MALFORMED: {exc}"
    fields = msg.to_json()
    if isinstance(msg, p.CaptureChunk):
        fields["data"] = f"<{len(msg.data)} bytes>"
    body = " ".join(f"{k}={v}" for k, v in fields.items())
    return f"{frame.type.name} seq={frame.seq} {body}"


def monitor(
    port: str,
    baud: int = 921600,  # the station's serial.baudrate: the protocol and the log share the UART
    duration: float = 0.0,
    say: Callable[[str], None] = print,
) -> int:
    """Print what a unit says until Ctrl-C (or duration seconds)."""
    import serial

    from agent.esp32.flash import _port_error

    try:
        ser = serial.Serial(port, baud, timeout=0.2)
    except (serial.SerialException, OSError) as exc:
        raise _port_error(port, exc) from exc
    splitter = LineSplitter()
    deadline = time.monotonic() + duration if duration else None
    say(f"monitoring {port} at {baud} baud (Ctrl-C to stop)")
    try:
        while deadline is None or time.monotonic() < deadline:
            data = ser.read(4096)
            for kind, item in splitter.feed(data):
                stamp = time.strftime("%H:%M:%S")
                if kind == "text":
                    say(f"{stamp}  log    {item}")
                else:
                    assert isinstance(item, p.Frame)
                    say(f"{stamp}  frame  {describe(item)}")
    except KeyboardInterrupt:
        pass
    except serial.SerialException as exc:
        say(f"port closed: {exc}")
        return 1
    finally:
        ser.close()
    return 0
