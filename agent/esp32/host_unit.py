"""The virtual unit on the firmware's own C core: the core's state machine and codec, a host HAL.

The host HAL stands in for the board: the link (pty or MQTT) for the UART / esp-mqtt, a dict of
JPEGs for PSRAM/SD, a list of JPEG files for the camera, a dict for NVS, the monotonic clock.
"""

from __future__ import annotations

import ctypes as C
import logging
import os
import queue
import select
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent import protocol as p
from agent.esp32 import core
from agent.esp32.virtual import (
    MqttUnitLink,
    PtySerialLink,
    SendResult,
    UnitConfig,
    UnitLink,
    VirtualUnit,
)

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

TOPICS = {0: "hello", 1: "telemetry", 2: "capture"}
WAKE = {"power_on": 0, "timer": 1, "pir": 2}
ACT_RUN, ACT_WAIT, ACT_SLEEP = 0, 1, 2
# firmware defaults (wc_config_defaults) that the virtual unit shortens so tests and demos move on
VIRTUAL_LINGER_MS = 300


@dataclass
class Sleep:
    """One deep sleep the core asked for: how long (0 = until PIR) and when."""

    seconds: int
    at: float = field(default_factory=time.monotonic)


class _RawInput:
    """Raw bytes from the station for the C core to decode: serial bytes or whole MQTT frames."""

    def __init__(self, link: UnitLink) -> None:
        self.link = link
        self.frames: queue.Queue[bytes] = queue.Queue()
        self.serial_fd: int | None = None
        if isinstance(link, PtySerialLink):
            self.serial_fd = link.fd
        elif isinstance(link, MqttUnitLink):
            # take the raw payloads: the C core, not the Python codec, must judge them
            def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
                self.frames.put(bytes(msg.payload))

            link.client.on_message = on_message

    def read(self, timeout: float) -> tuple[str, bytes] | None:
        """('bytes', data) from serial or ('frame', data) from MQTT, or None after timeout."""
        if self.serial_fd is not None:
            readable, _, _ = select.select([self.serial_fd], [], [], max(0.0, timeout))
            if not readable:
                return None
            try:
                data = os.read(self.serial_fd, 65536)
            except OSError:
                return None
            return ("bytes", data) if data else None
        if isinstance(self.link, MqttUnitLink):
            try:
                return "frame", self.frames.get(timeout=max(0.0, timeout))
            except queue.Empty:
                return None
        # any other link delivers decoded frames: rebuild the exact bytes for the C decoder
        frame = self.link.recv(timeout)
        if frame is None:
            return None
        body = p.HEADER.pack(p.SYNC, p.VERSION, frame.type, frame.seq, len(frame.payload))
        body += frame.payload
        return "frame", body + struct.pack("<I", p.crc32(body[2:]))


class CoreVirtualUnit(VirtualUnit):
    """A virtual unit whose behaviour is the firmware's C core (same interface as VirtualUnit)."""

    engine = "c-core"

    def __init__(
        self,
        unit_id: str,
        link: UnitLink,
        *,
        images: Iterable[bytes] | None = None,
        nvs: dict[str, int | str] | None = None,
        battery_mv: int = 3900,
        **unit: Any,
    ) -> None:
        # chunk_size, firmware_version, chip, mac, ack_timeout_s, ... as VirtualUnit takes them
        super().__init__(unit_id, link, **unit)
        self.lib = core.load_core()
        # NVS as the firmware would find it after `fieldstation esp32 configure`
        self.nvs: dict[str, int | str] = {
            "unit_id": unit_id,
            "chunk_size": self.chunk_size,
            "ack_timeout_ms": max(100, int(self.ack_timeout_s * 1000)),
            "max_attempts": self.max_attempts,
            "linger_ms": VIRTUAL_LINGER_MS,
            "capture_seq": self.next_capture_id,
        }
        self.nvs.update(nvs or {})
        self.images = list(images or [])
        self._image_index = 0
        self._next_image: bytes | None = None
        self.meta: dict[int, tuple[int, int, int]] = {}  # capture id -> (unit_time, kind, trigger)
        self.battery_mv = battery_mv
        self.temperature_cc = -32768
        self.rssi_dbm = 0
        self._epoch_offset_ms: int | None = None
        self.sleeps: list[Sleep] = []
        self.duplicate_acks = 0
        self.log_lines: list[str] = []
        self._events: list[p.Message] = []
        self._replies: list[p.Ack | p.Nak] = []
        self._commands: list[p.Message] = []
        self._begins: dict[int, int] = {}
        self._input = _RawInput(link)
        self._last_capture_id: int | None = None
        self._cb_error: BaseException | None = None
        self._hal = self._make_hal()
        self._unit = C.create_string_buffer(self.lib.wc_sizeof(0))
        mac_raw = bytes(int(x, 16) for x in self.mac.split(":"))
        rc = self.lib.wc_unit_init(
            self._unit,
            C.byref(self._hal),
            None,
            self.firmware_version.encode(),
            self.chip.encode(),
            (C.c_uint8 * 6).from_buffer_copy(mac_raw),
        )
        if rc != 0:
            raise ValueError(f"unit {unit_id!r}: the core refused its NVS config ({rc})")
        if self.max_chunk is not None:
            # the board's PSRAM buffer (app_main.c sizes it from the free heap); None: the core's
            # built-in 16 KiB one
            size = min(self.max_chunk, p.MAX_CHUNK) + p.OVERHEAD + p.CHUNK_HEAD_SIZE
            self._chunk_buf = (C.c_uint8 * size)()
            self.lib.wc_unit_set_chunk_buffer(self._unit, self._chunk_buf, size)
        self._station_time_ms = 0
        self._lock = threading.RLock()
        # called with the whole NVS dict after the core writes a key (the virtual board persists it)
        self.on_nvs_change: Callable[[dict[str, int | str]], None] | None = None

    # --- host HAL -------------------------------------------------------------------------------

    def _guard(self, fn: Callable[..., object], default: object) -> Callable[..., object]:
        """Callbacks must not raise through C: keep the first error and re-raise it after the call."""

        def wrapped(*args: object) -> object:
            try:
                return fn(*args)
            except BaseException as exc:  # noqa: BLE001
                if self._cb_error is None:
                    self._cb_error = exc
                return default

        return wrapped

    def _make_hal(self) -> core.Hal:
        g = self._guard

        def now_ms(_ctx: object) -> int:
            return int((time.monotonic() - self.boot) * 1000)

        def epoch_ms(_ctx: object, out: C._Pointer[C.c_uint64]) -> int:
            if self._epoch_offset_ms is None:
                return -1
            out[0] = now_ms(None) + self._epoch_offset_ms
            return 0

        def set_epoch_ms(_ctx: object, ms: int) -> None:
            self._epoch_offset_ms = ms - now_ms(None)

        def send(_ctx: object, topic: int, frame: C._Pointer[C.c_uint8], n: int) -> int:
            data = C.string_at(frame, n)
            if data[3] == p.FrameType.CAPTURE_BEGIN:
                idlen = data[8]
                (cid,) = struct.unpack_from("<I", data, 9 + idlen)
                self._begins[cid] = self._begins.get(cid, 0) + 1
            try:
                self.link.send(data, TOPICS[topic])
            except (OSError, TimeoutError, ValueError) as exc:
                log.warning("unit %s: send failed: %s", self.unit_id, exc)
                return -1
            return 0

        def capture(_ctx: object, cfg: object, meta: C._Pointer[core.CaptureMeta]) -> int:
            jpeg = self._next_image
            self._next_image = None
            if jpeg is None and self.images:
                jpeg = self.images[self._image_index % len(self.images)]
                self._image_index += 1
            if jpeg is None:
                return -19  # no camera frames: the caller hands JPEGs to send_capture()
            m = meta.contents
            m.size = len(jpeg)
            self.pending[m.capture_id] = jpeg
            self.meta[m.capture_id] = (m.unit_time, m.time_kind, m.trigger)
            self._last_capture_id = m.capture_id
            return 0

        def stored_meta(_ctx: object, cid: int, out: C._Pointer[core.CaptureMeta]) -> int:
            jpeg = self.pending.get(cid)
            if jpeg is None:
                return -1
            unit_time, kind, trigger = self.meta.get(cid, (0, 0, 0))
            m = out.contents
            m.capture_id, m.size, m.unit_time, m.time_kind, m.trigger = (
                cid,
                len(jpeg),
                unit_time,
                kind,
                trigger,
            )
            return 0

        def stored_read(
            _ctx: object, cid: int, off: int, buf: C._Pointer[C.c_uint8], n: int
        ) -> int:
            jpeg = self.pending.get(cid)
            if jpeg is None or off + n > len(jpeg):
                return -1
            C.memmove(buf, jpeg[off : off + n], n)
            return 0

        def stored_delete(_ctx: object, cid: int) -> None:
            self.pending.pop(cid, None)
            self.meta.pop(cid, None)

        def stored_oldest(_ctx: object, out: C._Pointer[C.c_uint32]) -> int:
            if not self.pending:
                return -1
            out[0] = min(self.pending)
            return 0

        def on_message(_ctx: object, ftype: int, payload: C._Pointer[C.c_uint8], n: int) -> None:
            self._events.append(p.MESSAGES[ftype].decode_payload(C.string_at(payload, n)))

        def core_log(_ctx: object, level: int, msg: bytes) -> None:
            text = msg.decode(errors="replace")
            self.log_lines.append(text)
            log.log(
                (logging.ERROR, logging.WARNING, logging.DEBUG)[min(level, 2)],
                "unit %s: %s",
                self.unit_id,
                text,
            )

        def get_num(_ctx: object, key: bytes, kind: int, out: C._Pointer[C.c_uint32]) -> int:
            v = self.nvs.get(key.decode())
            if not isinstance(v, int):
                return -1
            out[0] = v & 0xFFFFFFFF
            return 0

        def set_num(_ctx: object, key: bytes, kind: int, value: int) -> int:
            if kind == 3 and value >= 0x8000:  # i16 travels sign-extended in a uint32
                value -= 1 << 32
            self.nvs[key.decode()] = value
            if self.on_nvs_change:
                self.on_nvs_change(dict(self.nvs))
            return 0

        def get_str(_ctx: object, key: bytes, buf: int, cap: int) -> int:
            v = self.nvs.get(key.decode())
            if not isinstance(v, str):
                return -1
            raw = v.encode()
            if len(raw) + 1 > cap:
                return -1
            C.memmove(buf, raw + b"\0", len(raw) + 1)
            return 0

        def set_str(_ctx: object, key: bytes, value: bytes) -> int:
            self.nvs[key.decode()] = value.decode()
            if self.on_nvs_change:
                self.on_nvs_change(dict(self.nvs))
            return 0

        kv = core.KV(
            core.GET_NUM_FN(g(get_num, -1)),
            core.SET_NUM_FN(g(set_num, -1)),
            core.GET_STR_FN(g(get_str, -1)),
            core.SET_STR_FN(g(set_str, -1)),
        )
        return core.Hal(
            core.NOW_FN(g(now_ms, 0)),
            core.EPOCH_FN(g(epoch_ms, -1)),
            core.SET_EPOCH_FN(g(set_epoch_ms, None)),
            core.SEND_FN(g(send, -1)),
            core.CAPTURE_FN(g(capture, -1)),
            core.META_FN(g(stored_meta, -1)),
            core.READ_FN(g(stored_read, -1)),
            core.DELETE_FN(g(stored_delete, None)),
            core.OLDEST_FN(g(stored_oldest, -1)),
            core.U16_FN(g(lambda _c: len(self.pending), 0)),
            core.U16_FN(g(lambda _c: self.battery_mv, 0)),
            core.I16_FN(g(lambda _c: self.temperature_cc, 0)),
            core.I8_FN(g(lambda _c: self.rssi_dbm, 0)),
            core.LOG_FN(g(core_log, None)),
            core.ON_MSG_FN(g(on_message, None)),
            kv,
        )

    def _check(self) -> None:
        if self._cb_error is not None:
            exc, self._cb_error = self._cb_error, None
            raise exc

    # --- what the core does ---------------------------------------------------------------------

    @property
    def config(self) -> UnitConfig:
        c = self.lib.wc_unit_config(self._unit).contents
        return UnitConfig(
            c.capture_interval_s,
            c.frame_size,
            c.jpeg_quality,
            c.pir_enabled,
            c.sleep_start_min,
            c.sleep_end_min,
            self._station_time_ms,
        )

    @config.setter
    def config(self, value: UnitConfig) -> None:
        # the base class assigns a default UnitConfig in __init__; the core owns the real one
        pass

    @property
    def chunk_in_use(self) -> int:
        return int(self.lib.wc_unit_chunk_size(self._unit))

    @property
    def stats(self) -> dict[str, int]:
        s = self.lib.wc_unit_stats(self._unit).contents
        return {f[0]: getattr(s, f[0]) for f in core.Stats._fields_}

    @property
    def next_capture_id(self) -> int:
        return int(getattr(self, "nvs", {}).get("capture_seq", 0))

    @next_capture_id.setter
    def next_capture_id(self, value: int) -> None:
        if hasattr(self, "nvs"):
            self.nvs["capture_seq"] = value

    def hello(self) -> None:
        with self._lock:
            self.lib.wc_unit_send_hello(self._unit)
            self.lib.wc_unit_send_config_report(self._unit)
            self._check()

    def report_config(self) -> None:
        with self._lock:
            self.lib.wc_unit_send_config_report(self._unit)
            self._check()

    def telemetry(
        self, battery_mv: int = 3900, temperature_c: float | None = 21.5, rssi_dbm: int = -60
    ) -> None:
        with self._lock:
            self.battery_mv = battery_mv
            self.temperature_cc = -32768 if temperature_c is None else round(temperature_c * 100)
            self.rssi_dbm = rssi_dbm
            self.lib.wc_unit_send_telemetry(self._unit)
            self._check()

    def wake(self, reason: str = "power_on") -> None:
        """A boot or deep-sleep wake: announce, capture when the wake asks for one, send pending."""
        with self._lock:
            self.lib.wc_unit_wake(self._unit, WAKE[reason])
            self._check()

    def discard_input(self) -> None:
        """Drop what the station sent while the unit slept (a sleeping board's UART hears nothing)."""
        while self._input.read(0) is not None:
            pass

    def pump(self, timeout: float) -> int:
        """Feed whatever the station sends within timeout to the core; return station messages seen."""
        got = self._input.read(timeout)
        if got is None:
            return 0
        kind, data = got
        with self._lock:
            buf = (C.c_uint8 * len(data)).from_buffer_copy(data)
            if kind == "bytes":
                self.lib.wc_unit_input(self._unit, buf, len(data))
            else:
                self.lib.wc_unit_message(self._unit, buf, len(data))
            self._check()
        seen = len(self._events)
        self._dispatch()
        return seen

    def _dispatch(self) -> None:
        events, self._events = self._events, []
        for msg in events:
            if isinstance(msg, p.Config):
                self._station_time_ms = msg.station_time_ms
            elif isinstance(msg, p.CaptureNow):
                self.capture_requests += 1
            elif isinstance(msg, p.SleepNow):
                self.asleep_for = msg.duration_s
            if isinstance(msg, p.Ack) and msg.status == 1:
                self.duplicate_acks += 1  # the station already held this capture id
            if isinstance(msg, (p.Ack, p.Nak)):
                self._replies.append(msg)
            else:
                self._commands.append(msg)
                if self.on_command:
                    self.on_command(msg)

    def poll(self) -> core.Action:
        act = core.Action()
        with self._lock:
            self.lib.wc_unit_poll(self._unit, C.byref(act))
            self._check()
        if act.kind == ACT_SLEEP:
            self.sleeps.append(Sleep(act.sleep_s))
        return act

    def send_capture(self, jpeg: bytes, trigger: int = p.Trigger.PIR) -> SendResult:
        """Store one JPEG through the core and drive it until the station ACKs (or the core gives up)."""
        self._replies, self._commands = [], []
        with self._lock:
            self._next_image = jpeg
            rc = self.lib.wc_unit_capture(self._unit, int(trigger))
            self._check()
        if rc != 0 or self._last_capture_id is None:
            raise RuntimeError(f"unit {self.unit_id}: capture failed in the core ({rc})")
        cid = self._last_capture_id
        result = SendResult(cid, acked=False)
        while True:
            act = self.poll()
            for reply in self._replies:
                if reply.capture_id != cid:
                    continue
                if isinstance(reply, p.Ack):
                    result.acked = True
                    result.duplicate = reply.status == 1
                elif isinstance(reply, p.Nak):
                    result.nak_reasons.append(p.NakReason(reply.reason).label)
            self._replies.clear()
            result.attempts = self._begins.get(cid, 0)
            if result.acked or cid not in self.pending:
                return result  # acked, or dropped by the core (not_jpeg / too_large)
            if act.kind == ACT_SLEEP:
                return result  # the core gave up for this wake and keeps the capture
            if act.kind == ACT_WAIT:
                self.pump(act.wait_ms / 1000)

    def poll_commands(self, timeout: float = 0.0) -> list[p.Message]:
        """Feed the station's frames to the core for up to timeout; return the commands applied."""
        self._replies, self._commands = [], []
        deadline = time.monotonic() + timeout
        while True:
            if self.pump(max(0.0, deadline - time.monotonic())) == 0 and (
                time.monotonic() >= deadline
            ):
                break
        out, self._commands = self._commands, []
        return out

    def run_cycle(self, wake: str = "timer", max_wait_s: float = 30.0) -> Sleep:
        """One firmware main-loop cycle: wake, then poll/wait/send until the core asks to sleep."""
        self._replies, self._commands = [], []
        self.wake(wake)
        deadline = time.monotonic() + max_wait_s
        while True:
            act = self.poll()
            self._replies.clear()
            if act.kind == ACT_SLEEP:
                return self.sleeps[-1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"unit {self.unit_id} did not finish its cycle in {max_wait_s}s")
            if act.kind == ACT_WAIT:
                self.pump(min(act.wait_ms / 1000, 0.5))

    def close(self) -> None:
        self.link.close()


class UnitRunner:
    """The firmware's main loop for a virtual unit, in a thread: wake, work, deep sleep, repeat.

    While "asleep" the unit hears nothing (bytes sent to it are dropped on the next wake, as a
    sleeping UART would lose them). It wakes when its timer runs out (time_scale > 0 shortens
    timers: 0.01 makes 300 s into 3 s; 0 means only explicit wakes) or on `wake("pir")`.
    """

    def __init__(self, unit: CoreVirtualUnit, time_scale: float = 0.0) -> None:
        self.unit = unit
        self.time_scale = time_scale
        self.awake = threading.Event()
        self._wake_reason: str | None = "power_on"
        self._wake = threading.Event()
        self._wake.set()
        self._stop = threading.Event()
        self.cycles = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"unit-{unit.unit_id}", daemon=True)

    def start(self) -> UnitRunner:
        self.thread.start()
        return self

    def wake(self, reason: str = "pir") -> None:
        """A PIR trigger (or timer) while the unit sleeps."""
        self._wake_reason = reason
        self._wake.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait()
                if self._stop.is_set():
                    return
                self._wake.clear()
                reason = self._wake_reason or "timer"
                self._wake_reason = None
                if reason != "power_on":
                    self.unit.discard_input()
                self.awake.set()
                self.unit.wake(reason)
                while not self._stop.is_set():
                    act = self.unit.poll()
                    if act.kind == ACT_SLEEP:
                        break
                    if act.kind == ACT_WAIT:
                        self.unit.pump(min(act.wait_ms / 1000, 0.1))
                self.awake.clear()
                self.cycles += 1
                seconds = self.unit.sleeps[-1].seconds if self.unit.sleeps else 0
                # timer wake after the (scaled) sleep unless something else wakes us first
                if (
                    self.time_scale > 0
                    and seconds > 0
                    and not self._wake.wait(seconds * self.time_scale)
                ):
                    self._wake_reason = "timer"
                    self._wake.set()
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test through .error
            self.error = exc
            log.exception("virtual unit %s crashed", self.unit.unit_id)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.thread.join(timeout=10)
