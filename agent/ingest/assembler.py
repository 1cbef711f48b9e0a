"""Turns protocol frames from one link into stored captures, telemetry and ACK/NAK replies.

Serial gives one `Assembler` per port, MQTT one per unit; both feed it decoded frames and give it
a `send` function for replies. The ACK is sent only after `Store.add_capture` returned, which is
after the commit is durable.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent import protocol as p
from agent.capture import Capture, IngestPath, TimeKindName
from agent.config import IngestSection
from agent.metrics import Metrics
from agent.store import AddResult, StorageFull, Store

if TYPE_CHECKING:
    from agent.ingest.commits import CommitQueue

log = logging.getLogger(__name__)

TIME_KINDS: dict[int, TimeKindName] = {
    p.TimeKind.BOOT_MS: "boot_ms",
    p.TimeKind.EPOCH_MS: "epoch_ms",
}
TRIGGERS = {t.value: t.name.lower() for t in p.Trigger}


@dataclass
class _Open:
    """A capture whose chunks are still arriving."""

    begin: p.CaptureBegin
    data: bytearray
    missing: set[int]
    last_activity: float
    first_seen: float = field(default_factory=time.monotonic)


class Assembler:
    """Reassembles captures on one link and answers the unit."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        limits: IngestSection,
        path: IngestPath,
        send: Callable[[p.Message], None],
        *,
        link: str,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        on_unit: Callable[[str], None] | None = None,
        on_stored: Callable[[str, str, bool], None] | None = None,
        committer: CommitQueue | None = None,
        chunk_limit: int = p.MAX_CHUNK,
        unit_config: Callable[[str], dict[str, int]] | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.limits = limits
        self.path = path
        self.send = send
        self.link = link
        self.clock = clock
        self.monotonic = monotonic
        self.on_unit = on_unit  # tells the station which link a unit is on (for commands)
        self.on_stored = on_stored  # (unit_id, capture_id, duplicate) after the ACK went out
        # where the commit and ACK run: inline (serial: one thread per port) or a commit queue
        # (MQTT: paho has one thread for every unit; the queue's commits take them all together)
        self.committer = committer
        # the largest chunk this link carries (MQTT broker packet size, frame payload limit)
        self.chunk_limit = chunk_limit
        self.chunk_sizes: dict[str, int] = {}  # unit -> chunk size negotiated at its HELLO
        self._told: set[str] = set()  # units sent their chunk size since their last HELLO
        # the CONFIG fields the station wants of a unit (the power manager's), so the CONFIG that
        # carries the chunk size never undoes a CONFIG sent a moment earlier
        self.unit_config = unit_config
        self.open: dict[tuple[str, int], _Open] = {}
        self._unknown: dict[int, float] = {}  # capture ids NAKed unknown_capture, and when
        self.last_unit: str | None = None

    # --- entry points ---------------------------------------------------------------------------

    def handle_frame(self, frame: p.Frame, topic_unit: str | None = None) -> None:
        """Handle one CRC-valid frame; bad content is NAKed or counted, never raised."""
        if frame.type not in p.UNIT_TO_STATION:
            self._reject("wrong_direction", f"frame type {frame.type.name} is station-to-unit")
            return
        try:
            msg = frame.message()
        except p.ProtocolError as exc:
            self._reject("malformed", str(exc))
            capture_id = _capture_id_in(frame)
            if capture_id != p.NO_CAPTURE:
                self.metrics.captures.labels(self.path, "nak").inc()
                self._nak(capture_id, p.NakReason.MALFORMED, str(exc))
            return
        unit = getattr(msg, "unit_id", None)
        if topic_unit is not None and unit is not None and unit != topic_unit:
            self._reject("unit_mismatch", f"payload unit {unit!r} on topic of {topic_unit!r}")
            if isinstance(msg, p.CaptureBegin):
                self._nak(msg.capture_id, p.NakReason.MALFORMED, "unit id differs from topic")
            return
        if unit is not None:
            self.last_unit = unit
            if self.on_unit:
                self.on_unit(unit)
        if isinstance(msg, p.Hello):
            self._hello(msg)
        elif isinstance(msg, p.Telemetry):
            self._telemetry(msg)
        elif isinstance(msg, p.ConfigReport):
            self._config_report(msg)
        elif isinstance(msg, p.CaptureBegin):
            self._begin(msg)
        elif isinstance(msg, p.CaptureChunk):
            self._chunk(msg, topic_unit)

    def expire(self) -> int:
        """Discard captures whose chunks stopped arriving; NAK them; return how many."""
        now = self.monotonic()
        stale = [
            key
            for key, o in self.open.items()
            if now - o.last_activity > self.limits.capture_timeout_s
        ]
        for key in stale:
            o = self.open.pop(key)
            got = o.begin.chunk_count - len(o.missing)
            log.warning(
                "%s: unit %s capture %d timed out with %d of %d chunks; discarded",
                self.link,
                key[0],
                key[1],
                got,
                o.begin.chunk_count,
            )
            self.metrics.captures.labels(self.path, "timeout").inc()
            self._nak(key[1], p.NakReason.TIMEOUT, f"no chunk for {self.limits.capture_timeout_s}s")
        return len(stale)

    def drop_all(self, why: str) -> None:
        """The link went away: incomplete captures die with it (units resend them)."""
        for (unit, cid), _o in list(self.open.items()):
            log.info("%s: discarding incomplete capture %s/%d: %s", self.link, unit, cid, why)
            self.metrics.captures.labels(self.path, "timeout").inc()
        self.open.clear()

    # --- message handlers -----------------------------------------------------------------------

    def _hello(self, msg: p.Hello) -> None:
        self.metrics.telemetry.labels(self.path, "hello").inc()
        self.store.update_unit(
            msg.unit_id,
            self.path,
            firmware_version=msg.firmware_version,
            chip=msg.chip,
            mac=msg.mac,
        )
        chunk = p.negotiate_chunk(
            msg,
            self.limits.max_chunk_bytes,
            self.limits.max_frame_payload - p.CHUNK_HEAD_SIZE,
            self.chunk_limit,
        )
        self.chunk_sizes[msg.unit_id] = chunk
        self._told.discard(msg.unit_id)
        log.info(
            "%s: unit %s says hello (firmware %s, %s, %s); chunk size %d (it can send %s)",
            self.link,
            msg.unit_id,
            msg.firmware_version,
            msg.chip,
            msg.mac,
            chunk,
            msg.max_chunk if msg.max_chunk is not None else "16 KiB, an older unit",
        )

    def _telemetry(self, msg: p.Telemetry) -> None:
        self.metrics.telemetry.labels(self.path, "telemetry").inc()
        self.store.add_telemetry(
            msg.unit_id,
            self.path,
            battery_mv=msg.battery_mv,
            temperature_c=msg.temperature_c,
            rssi_dbm=msg.rssi_dbm if msg.rssi_dbm else None,
            uptime_s=msg.uptime_s,
            pending_captures=msg.pending_captures,
        )

    def _config_report(self, msg: p.ConfigReport) -> None:
        self.metrics.telemetry.labels(self.path, "config_report").inc()
        config = {k: v for k, v in msg.to_json().items() if k != "unit_id"}
        self.store.update_unit(msg.unit_id, self.path, config=json.dumps(config, sort_keys=True))
        self._tell_chunk(msg)

    def _tell_chunk(self, report: p.ConfigReport) -> None:
        """A unit that can change its chunk size (its report says which it uses) and uses another
        than the one negotiated at its HELLO gets a CONFIG with the settings the station wants of
        it (else the report's own) and the negotiated chunk size; once per HELLO, so a unit that
        does not follow cannot make it ping-pong."""
        unit = report.unit_id
        wanted = self.chunk_sizes.get(unit)
        if report.chunk_size is None or wanted is None or report.chunk_size == wanted:
            return
        if unit in self._told:
            return
        self._told.add(unit)
        fields = {k: getattr(report, k) for k in ("capture_interval_s", "frame_size",
                  "jpeg_quality", "pir_enabled", "sleep_start_min", "sleep_end_min")}  # fmt: skip
        try:
            if self.unit_config is not None:
                fields.update(self.unit_config(unit))
            now_ms = int(self.clock() * 1000)
            self.send(p.Config(**fields, station_time_ms=now_ms, chunk_size=wanted))
        except Exception as exc:  # the next HELLO tries again
            log.info("%s: could not send unit %s its chunk size: %s", self.link, unit, exc)
            return
        log.info(
            "%s: unit %s sends %d-byte chunks; told it to use %d", self.link, unit,
            report.chunk_size, wanted,
        )  # fmt: skip

    def _begin(self, msg: p.CaptureBegin) -> None:
        key = (msg.unit_id, msg.capture_id)
        if msg.total_size > self.limits.max_capture_bytes:
            self._refuse(
                msg.capture_id,
                p.NakReason.TOO_LARGE,
                "too_large",
                f"total_size {msg.total_size} is above {self.limits.max_capture_bytes}",
            )
            return
        if msg.chunk_size > self.limits.max_chunk_bytes:
            self._refuse(
                msg.capture_id,
                p.NakReason.TOO_LARGE,
                "too_large",
                f"chunk_size {msg.chunk_size} is above {self.limits.max_chunk_bytes}",
            )
            return
        if msg.chunk_count > 0xFFFF:
            self._refuse(
                msg.capture_id,
                p.NakReason.MALFORMED,
                "malformed",
                f"{msg.chunk_count} chunks do not fit a u16 index",
            )
            return
        mine = sum(1 for (u, _c) in self.open if u == msg.unit_id)
        if key not in self.open and mine >= self.limits.max_open_captures:
            self._refuse(
                msg.capture_id,
                p.NakReason.BUSY,
                "busy",
                f"{mine} captures from this unit are already incomplete",
            )
            return
        # a BEGIN for an open capture restarts it: the unit is resending from scratch
        self.open[key] = _Open(
            begin=msg,
            data=bytearray(msg.total_size),
            missing=set(range(msg.chunk_count)),
            last_activity=self.monotonic(),
        )

    def _chunk(self, msg: p.CaptureChunk, topic_unit: str | None) -> None:
        key = self._find(msg.capture_id, topic_unit)
        if key is None:
            # one NAK per stale capture, not one per chunk: the unit resends once, not N times
            now = self.monotonic()
            self._unknown = {c: t for c, t in self._unknown.items() if now - t < 10}
            if msg.capture_id in self._unknown:
                self.metrics.rejected.labels(self.path, "unknown_capture").inc()
                return
            self._unknown[msg.capture_id] = now
            self._refuse(
                msg.capture_id,
                p.NakReason.UNKNOWN_CAPTURE,
                "unknown_capture",
                f"chunk {msg.index} of capture {msg.capture_id} with no BEGIN",
            )
            return
        o = self.open[key]
        b = o.begin
        if msg.index >= b.chunk_count:
            self.open.pop(key)
            self._refuse(
                msg.capture_id,
                p.NakReason.MALFORMED,
                "malformed",
                f"chunk index {msg.index} beyond the {b.chunk_count} announced",
            )
            return
        start = msg.index * b.chunk_size
        expected = min(b.chunk_size, b.total_size - start)
        if len(msg.data) != expected:
            self.open.pop(key)
            self._refuse(
                msg.capture_id,
                p.NakReason.MALFORMED,
                "malformed",
                f"chunk {msg.index} holds {len(msg.data)} bytes, expected {expected}",
            )
            return
        o.data[start : start + expected] = msg.data
        o.missing.discard(msg.index)
        o.last_activity = self.monotonic()
        if not o.missing:
            self.open.pop(key)
            if self.committer is None:
                self._store_and_ack(b, bytes(o.data))
            else:
                self.committer.put(self, b, bytes(o.data))

    def _store_and_ack(self, b: p.CaptureBegin, jpeg: bytes) -> None:
        capture = self.checked_capture(b, jpeg)
        if capture is None:
            return
        started = time.perf_counter()
        outcome: AddResult | BaseException
        try:
            outcome = self.store.add_capture(capture)
        except Exception as exc:  # answered below: the unit keeps its copy and retries
            outcome = exc
        self.acknowledge(b, capture, outcome, started)

    def checked_capture(self, b: p.CaptureBegin, jpeg: bytes) -> Capture | None:
        """The reassembled capture, or None after a NAK when its bytes are not what BEGIN said."""
        actual = p.crc32(jpeg)
        if actual != b.image_crc32:
            self._refuse(
                b.capture_id,
                p.NakReason.CRC_MISMATCH,
                "crc_mismatch",
                f"image crc32 {actual:08x}, BEGIN said {b.image_crc32:08x}",
            )
            return None
        if not p.is_jpeg(jpeg):
            self._refuse(
                b.capture_id,
                p.NakReason.NOT_JPEG,
                "not_jpeg",
                "bytes do not start with FF D8 and end with FF D9",
            )
            return None
        return Capture(
            unit_id=b.unit_id,
            unit_ref=str(b.capture_id),
            path=self.path,
            jpeg=jpeg,
            received_at=self.clock(),
            unit_time=b.unit_time,
            unit_time_kind=TIME_KINDS.get(b.time_kind, "boot_ms"),
            trigger=TRIGGERS.get(b.trigger),
        )

    def acknowledge(
        self,
        b: p.CaptureBegin,
        capture: Capture,
        outcome: AddResult | BaseException,
        started: float,
    ) -> None:
        """ACK a stored capture (its commit is durable) or NAK one the store refused."""
        if isinstance(outcome, StorageFull):
            self._refuse(b.capture_id, p.NakReason.STORAGE_FULL, "storage_full", str(outcome))
            return
        if isinstance(outcome, BaseException):  # the unit keeps its copy and retries
            log.error(
                "%s: storing capture %s/%d failed",
                self.link,
                b.unit_id,
                b.capture_id,
                exc_info=outcome,
            )
            self._refuse(b.capture_id, p.NakReason.STORAGE_ERROR, "storage_error", str(outcome))
            return
        result = outcome
        self.metrics.commit_seconds.set(time.perf_counter() - started)
        # the commit is durable: now, and only now, the unit may delete its copy
        self.send(p.Ack(b.capture_id, 1 if result.duplicate else 0))
        if result.duplicate:
            self.metrics.captures.labels(self.path, "duplicate").inc()
        else:
            self.metrics.captures.labels(self.path, "stored").inc()
            self.metrics.capture_bytes.labels(self.path).inc(len(capture.jpeg))
            if result.id_reuse:
                self.metrics.id_reuse.inc()
                log.warning(
                    "%s: unit %s reused capture id %d for different bytes; stored as %s",
                    self.link,
                    b.unit_id,
                    b.capture_id,
                    result.capture_id,
                )
        if self.on_stored:
            self.on_stored(b.unit_id, result.capture_id, result.duplicate)

    # --- helpers --------------------------------------------------------------------------------

    def _find(self, capture_id: int, topic_unit: str | None) -> tuple[str, int] | None:
        if topic_unit is not None:
            key = (topic_unit, capture_id)
            return key if key in self.open else None
        # serial: chunks carry no unit id; one port normally has one unit
        matches = [k for k in self.open if k[1] == capture_id]
        if len(matches) == 1:
            return matches[0]
        if self.last_unit and (self.last_unit, capture_id) in self.open:
            return (self.last_unit, capture_id)
        return None

    def _refuse(self, capture_id: int, reason: p.NakReason, label: str, detail: str) -> None:
        log.warning("%s: NAK %s for capture %d: %s", self.link, label, capture_id, detail)
        self.metrics.captures.labels(self.path, "nak").inc()
        self._nak(capture_id, reason, detail)

    def _nak(self, capture_id: int, reason: p.NakReason, detail: str) -> None:
        self.metrics.naks.labels(self.path, reason.label).inc()
        try:
            self.send(p.Nak(capture_id, reason, detail.encode()[:200].decode("utf-8", "ignore")))
        except Exception as exc:  # the link may be gone; the unit will time out and resend
            log.info("%s: could not send NAK for capture %d: %s", self.link, capture_id, exc)

    def _reject(self, reason: str, detail: str) -> None:
        self.metrics.rejected.labels(self.path, reason).inc()
        log.warning("%s: rejected frame (%s): %s", self.link, reason, detail)


def _capture_id_in(frame: p.Frame) -> int:
    """Best-effort capture id of a malformed capture frame, so the NAK can name it."""
    try:
        if frame.type == p.FrameType.CAPTURE_CHUNK and len(frame.payload) >= 4:
            return int.from_bytes(frame.payload[:4], "little")
        if frame.type == p.FrameType.CAPTURE_BEGIN and frame.payload:
            n = frame.payload[0]
            raw = frame.payload[1 + n : 5 + n]
            if len(raw) == 4:
                return int.from_bytes(raw, "little")
    except Exception:
        pass
    return p.NO_CAPTURE
