"""Serial ingest: one reader per configured port, surviving unplug and replug."""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable

import serial

from agent import protocol as p
from agent.config import IngestSection
from agent.health import Alarm
from agent.ingest.assembler import Assembler
from agent.metrics import Metrics
from agent.store import Store

log = logging.getLogger(__name__)


class SerialLink:
    """One port. `run` reads frames until stopped; `send` writes a frame (ACKs, commands)."""

    def __init__(
        self,
        port: str,
        store: Store,
        metrics: Metrics,
        limits: IngestSection,
        *,
        baudrate: int = 921600,
        reopen_s: float = 2.0,
        on_unit: Callable[[str, SerialLink], None] | None = None,
        on_stored: Callable[[str, str, bool], None] | None = None,
        unit_config: Callable[[str], dict[str, int]] | None = None,
    ) -> None:
        self.port = port  # may be a /dev/serial/by-id/... symlink; resolved at every open
        self.name = f"serial:{os.path.basename(port)}"
        self.baudrate = baudrate
        self.reopen_s = reopen_s
        self.metrics = metrics
        self.limits = limits
        self._serial: serial.Serial | None = None
        self.problem: str | None = None  # why the port is not open, while it is not
        self._write_lock = threading.Lock()
        self._seq = 0
        self.assembler = Assembler(
            store,
            metrics,
            limits,
            "serial",
            self.send,
            link=self.name,
            on_unit=(lambda unit: on_unit(unit, self)) if on_unit else None,
            on_stored=on_stored,
            unit_config=unit_config,
        )

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def alarms(self) -> list[Alarm]:
        """The port as an alarm while it cannot be opened or was lost."""
        problem = self.problem
        return [Alarm("serial", self.port, problem)] if problem and not self.is_open else []

    def send(self, msg: p.Message) -> None:
        with self._write_lock:
            ser = self._serial
            if ser is None:
                raise ConnectionError(f"{self.port} is not open")
            self._seq = (self._seq + 1) & 0xFFFF
            ser.write(p.encode_frame(msg, self._seq))
            ser.flush()

    def run(self, stop: threading.Event) -> None:
        down_logged = False
        while not stop.is_set():
            try:
                ser = serial.Serial(self.port, self.baudrate, timeout=0.5, write_timeout=5)
            except (serial.SerialException, OSError) as exc:
                self.problem = f"cannot open ({_why(exc)}); retrying every {self.reopen_s:g} s"
                if not down_logged:
                    log.warning(
                        "%s: cannot open (%s); retrying every %.0f s", self.port, exc, self.reopen_s
                    )
                    down_logged = True
                self.metrics.link_up.labels(self.name).set(0)
                stop.wait(self.reopen_s)
                continue
            log.info("%s: open", self.port)
            self.problem = None
            down_logged = False
            self.metrics.link_up.labels(self.name).set(1)
            with self._write_lock:
                self._serial = ser
            try:
                self._read(ser, stop)
            except (serial.SerialException, OSError) as exc:
                log.warning("%s: lost (%s); will reopen", self.port, exc)
                self.problem = f"lost ({exc}); reopening"
            finally:
                with self._write_lock:
                    self._serial = None
                try:
                    ser.close()
                except Exception:
                    pass
                self.metrics.link_up.labels(self.name).set(0)
                self.assembler.drop_all("port closed")
            if not stop.is_set():
                stop.wait(self.reopen_s)

    def _read(self, ser: serial.Serial, stop: threading.Event) -> None:
        decoder = p.StreamDecoder(self.limits.max_frame_payload)
        noise_seen = 0
        fd = ser.fileno()
        while not stop.is_set():
            # straight to the fd (pyserial's read() costs more per call than the frame work), and
            # read before waiting: while a capture streams in, each piece then costs one system
            # call and one GIL hand-off, not a select() as well. pyserial leaves the fd
            # non-blocking, so an empty port answers at once (EAGAIN, or no bytes with VMIN 0)
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                data = b""
            if not data:
                readable, _, _ = select.select([fd], [], [], 0.5)
                if not readable:
                    if self.assembler.open:
                        self.assembler.expire()
                    continue
                data = os.read(fd, 65536)
                if not data:  # readable but empty: the device went away
                    raise serial.SerialException(f"{self.port} disconnected")
            for frame in decoder.feed(data):
                self.assembler.handle_frame(frame)
            if decoder.noise_bytes != noise_seen:
                self.metrics.noise_bytes.labels(self.port).inc(decoder.noise_bytes - noise_seen)
                noise_seen = decoder.noise_bytes


def _why(exc: BaseException) -> str:
    """pyserial's "could not open port P: [Errno 2] No such file or directory: 'P'" as the words
    a person needs: "No such file or directory"."""
    text = str(exc)
    if "] " in text:
        text = text.rsplit("] ", 1)[1]
    text = text.split(": '", 1)[0]
    if text == "Permission denied":
        text += ": the station's user needs the dialout group"
    return text


class SerialIngest:
    """The worker for one port (the supervisor restarts it if it crashes)."""

    def __init__(self, link: SerialLink) -> None:
        self.link = link
        self.name = link.name

    def run(self, stop: threading.Event) -> None:
        self.link.run(stop)
