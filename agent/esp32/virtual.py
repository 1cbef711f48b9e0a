"""A virtual ESP32 camera unit: speaks the wire protocol over a pty or MQTT, with real JPEGs.

It behaves like the firmware: HELLO and CONFIG_REPORT on start, a capture sent as BEGIN + chunks,
kept until the station ACKs it, resent after a NAK or a timeout, commands applied as they arrive.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import protocol as p

if TYPE_CHECKING:  # paho is imported when an MQTT link is made, not by every virtual unit
    import paho.mqtt.client as mqtt
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

# NAK reasons after which the firmware resends the whole capture (PROTOCOL.md §3, NAK table)
RESEND = {
    p.NakReason.CRC_MISMATCH,
    p.NakReason.TIMEOUT,
    p.NakReason.MALFORMED,
    p.NakReason.UNKNOWN_CAPTURE,
    p.NakReason.BUSY,
    p.NakReason.STORAGE_ERROR,
}


class UnitLink:
    """How a unit reaches the station: send a frame, receive the station's frames."""

    def send(self, frame: bytes, kind: str) -> None:
        raise NotImplementedError

    def recv(self, timeout: float) -> p.Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PtySerialLink(UnitLink):
    """The unit's end of a pseudo-terminal: the station opens the other end as a serial port."""

    def __init__(self, master_fd: int | None = None) -> None:
        if master_fd is None:
            master_fd, slave_fd = os.openpty()
            self.slave_path = os.ttyname(slave_fd)
            # raw mode on the slave side so the line discipline never rewrites our bytes
            import tty

            tty.setraw(slave_fd)
            self._slave_fd: int | None = slave_fd
        else:
            self.slave_path = ""
            self._slave_fd = None
        self.fd = master_fd
        self.decoder = p.StreamDecoder()
        self._frames: list[p.Frame] = []
        self._lock = threading.Lock()

    def send(self, frame: bytes, kind: str) -> None:
        with self._lock:
            view = memoryview(frame)
            while view:
                _, writable, _ = select.select([], [self.fd], [], 5)
                if not writable:
                    raise TimeoutError("serial link is not draining")
                n = os.write(self.fd, view)
                view = view[n:]

    def recv(self, timeout: float) -> p.Frame | None:
        deadline = time.monotonic() + timeout
        while not self._frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self.fd], [], [], remaining)
            if readable:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    return None
                self._frames.extend(self.decoder.feed(data))
        return self._frames.pop(0)

    def close(self) -> None:
        for fd in (self.fd, self._slave_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


class MqttUnitLink(UnitLink):
    """The unit's MQTT client: publishes on its up topics, subscribes to ack and cmd (QoS 1)."""

    def __init__(
        self, host: str, port: int, station_id: str, unit_id: str, *, topic_root: str = "wildcam"
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.prefix = f"{topic_root}/{station_id}/{unit_id}/"
        self._inbox: queue.Queue[p.Frame] = queue.Queue()
        self._connected = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"wildcam-unit-{unit_id}",
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )

        def on_connect(
            c: mqtt.Client,
            userdata: Any,
            flags: mqtt.ConnectFlags,
            rc: ReasonCode,
            props: Properties | None,
        ) -> None:
            no_delay(c)
            c.subscribe([(self.prefix + "ack", 1), (self.prefix + "cmd", 1)])

        def on_subscribe(
            c: mqtt.Client,
            userdata: Any,
            mid: int,
            rcs: list[ReasonCode],
            props: Properties | None,
        ) -> None:
            self._connected.set()

        def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            try:
                self._inbox.put(p.decode_frame(bytes(msg.payload)))
            except p.ProtocolError as exc:
                log.warning("virtual unit: bad frame from station: %s", exc)

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect(host, port, keepalive=30)
        client.loop_start()
        self.client = client
        if not self._connected.wait(10):
            client.loop_stop()
            raise ConnectionError(f"virtual unit could not subscribe at {host}:{port}")

    def send(self, frame: bytes, kind: str) -> None:
        info = self.client.publish(self.prefix + kind, frame, qos=1)
        info.wait_for_publish(10)

    def recv(self, timeout: float) -> p.Frame | None:
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class UnitConfig:
    """What the firmware keeps in NVS and changes on a CONFIG command."""

    capture_interval_s: int = 300
    frame_size: int = 8
    jpeg_quality: int = 12
    pir_enabled: int = 1
    sleep_start_min: int = p.NO_QUIET_PERIOD
    sleep_end_min: int = p.NO_QUIET_PERIOD
    station_time_ms: int = 0


@dataclass
class SendResult:
    capture_id: int
    acked: bool
    duplicate: bool = False
    attempts: int = 0
    nak_reasons: list[str] = field(default_factory=list)


class VirtualUnit:
    """One simulated camera unit, in pure Python.

    `agent.esp32.units.virtual_unit(...)` makes the unit to use: the firmware's own C core
    (agent.esp32.host_unit.CoreVirtualUnit) when a C compiler is at hand, else this fallback.
    """

    engine = "python"

    def __init__(
        self,
        unit_id: str,
        link: UnitLink,
        *,
        chunk_size: int = 4096,
        firmware_version: str = "virtual-1.0.0",
        chip: str = "esp32s3",
        mac: str | None = None,
        ack_timeout_s: float = 10.0,
        max_attempts: int = 4,
        first_capture_id: int = 1,
        boot_time: float | None = None,
        max_chunk: int | None = None,
    ) -> None:
        p.check_unit_id(unit_id)
        self.unit_id = unit_id
        self.link = link
        self.chunk_size = chunk_size
        # what HELLO advertises (virtual_unit() gives an ESP32-S3 with PSRAM a whole frame); None:
        # an older unit that neither advertises nor follows a negotiated chunk size
        self.max_chunk = max_chunk
        self.firmware_version = firmware_version
        self.chip = chip
        rnd = random.Random(unit_id)
        self.mac = mac or ":".join(f"{b:02x}" for b in [0x24, 0x0A, 0xC4, *rnd.randbytes(3)])
        self.ack_timeout_s = ack_timeout_s
        self.max_attempts = max_attempts
        self.next_capture_id = first_capture_id
        self.boot = time.monotonic() if boot_time is None else boot_time
        self.config = UnitConfig()
        self.asleep_for: int | None = None  # set by SLEEP_NOW
        self.capture_requests = 0  # CAPTURE_NOW received
        self.pending: dict[int, bytes] = {}  # kept until ACK, like PSRAM/SD on the board
        self._seq = 0
        self.on_command: Callable[[p.Message], None] | None = None

    # --- sending --------------------------------------------------------------------------------

    def _send(self, msg: p.Message, kind: str) -> None:
        self._seq = (self._seq + 1) & 0xFFFF
        self.link.send(p.encode_frame(msg, self._seq), kind)

    def uptime_ms(self) -> int:
        return int((time.monotonic() - self.boot) * 1000)

    def hello(self) -> None:
        hello = p.Hello(self.unit_id, self.firmware_version, self.chip, self.mac)
        self._send(replace(hello, max_chunk=self.max_chunk), "hello")
        self.report_config()

    @property
    def chunk_in_use(self) -> int:
        """The chunk size the unit's captures go out with now."""
        return self.chunk_size

    def report_config(self) -> None:
        chunk = None if self.max_chunk is None else self.chunk_size
        self._send(p.ConfigReport(self.unit_id, **vars(self.config), chunk_size=chunk), "hello")

    def telemetry(
        self, battery_mv: int = 3900, temperature_c: float | None = 21.5, rssi_dbm: int = -60
    ) -> None:
        self._send(
            p.Telemetry(
                self.unit_id,
                battery_mv,
                -32768 if temperature_c is None else round(temperature_c * 100),
                rssi_dbm,
                self.uptime_ms() // 1000,
                len(self.pending),
            ),
            "telemetry",
        )

    def send_capture(self, jpeg: bytes, trigger: int = p.Trigger.PIR) -> SendResult:
        """Send one JPEG and wait for the station's ACK, resending as the firmware does."""
        capture_id = self.next_capture_id
        self.next_capture_id += 1
        self.pending[capture_id] = jpeg
        unit_time = self.uptime_ms()
        result = SendResult(capture_id, acked=False)
        while result.attempts < self.max_attempts:
            result.attempts += 1
            for msg in p.chunk_capture(
                self.unit_id, capture_id, jpeg, self.chunk_size, unit_time, trigger=trigger
            ):
                self._send(msg, "capture")
            reply = self._await_reply(capture_id)
            if isinstance(reply, p.Ack):
                del self.pending[capture_id]  # only now may the unit forget it
                result.acked = True
                result.duplicate = reply.status == 1
                return result
            if isinstance(reply, p.Nak):
                reason = p.NakReason(reply.reason)
                result.nak_reasons.append(reason.label)
                if reason not in RESEND:
                    return result
        return result

    def _await_reply(self, capture_id: int) -> p.Ack | p.Nak | None:
        deadline = time.monotonic() + self.ack_timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            frame = self.link.recv(remaining)
            if frame is None:
                return None
            msg = frame.message()
            if isinstance(msg, (p.Ack, p.Nak)):
                if msg.capture_id in (capture_id, p.NO_CAPTURE):
                    return msg
                continue  # a late answer to an earlier attempt
            self._apply(msg)
        return None

    # --- commands -------------------------------------------------------------------------------

    def poll_commands(self, timeout: float = 0.0) -> list[p.Message]:
        """Apply every command waiting from the station; return them."""
        seen: list[p.Message] = []
        deadline = time.monotonic() + timeout
        while True:
            frame = self.link.recv(max(0.0, deadline - time.monotonic()))
            if frame is None:
                return seen
            msg = frame.message()
            if not isinstance(msg, (p.Ack, p.Nak)):
                self._apply(msg)
                seen.append(msg)

    def _apply(self, msg: p.Message) -> None:
        if isinstance(msg, p.Config):
            self.config = replace(self.config, **{k: getattr(msg, k) for k in vars(self.config)})
            if msg.chunk_size is not None and self.max_chunk is not None:
                self.chunk_size = min(msg.chunk_size, self.max_chunk)
            self.report_config()
        elif isinstance(msg, p.CaptureNow):
            self.capture_requests += 1
        elif isinstance(msg, p.SleepNow):
            self.asleep_for = msg.duration_s
        if self.on_command:
            self.on_command(msg)

    def close(self) -> None:
        self.link.close()


def load_images(folder: Path) -> list[bytes]:
    """The JPEG files a virtual unit's camera 'sees', in name order."""
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise FileNotFoundError(f"no .jpg files in {folder}")
    return [f.read_bytes() for f in files]


def no_delay(client: mqtt.Client) -> None:
    """Send small frames (the last chunk, a HELLO) at once instead of waiting on Nagle's ~40 ms,
    as the firmware's lwIP socket does."""
    import socket

    sock = client.socket()
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
