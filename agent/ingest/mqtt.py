"""MQTT ingest: QoS 1 on a persistent session (agent/ingest/mqttlink.py), reconnect with backoff."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from functools import partial

from agent import protocol as p
from agent.config import IngestSection, MqttSection, read_secret
from agent.health import Alarm
from agent.ingest.assembler import Assembler
from agent.ingest.commits import CommitQueue
from agent.ingest.mqttlink import BrokerRefused, LinkSettings, MqttLink
from agent.ingest.mqttwire import MAXIMUM_PACKET_SIZE, Connack, MqttProtocolError
from agent.metrics import Metrics
from agent.store import Store

log = logging.getLogger(__name__)

STABLE_S = 60.0  # a connection that lasted this long starts the reconnect backoff again


class MqttIngest:
    """Subscribes to every unit's hello/telemetry/capture topics and answers on its ack topic."""

    name = "mqtt"

    def __init__(
        self,
        settings: MqttSection,
        station_id: str,
        store: Store,
        metrics: Metrics,
        limits: IngestSection,
        *,
        on_unit: Callable[[str, MqttIngest], None] | None = None,
        on_stored: Callable[[str, str, bool], None] | None = None,
        unit_config: Callable[[str], dict[str, int]] | None = None,
    ) -> None:
        self.settings = settings
        self.station_id = station_id
        self.store = store
        self.metrics = metrics
        self.limits = limits
        self.on_unit = on_unit
        self.on_stored = on_stored
        self.unit_config = unit_config
        self.prefix = f"{settings.topic_root}/{station_id}/"
        self._assemblers: dict[str, Assembler] = {}
        self._link: MqttLink | None = None
        self._lock = threading.Lock()  # the link's thread assembles, ours expires: one at a time
        # the MQTT PUBACK need not wait for the commit: the unit keeps its copy until our
        # protocol ACK, which the commit queue sends after the durable commit
        self._committer = CommitQueue(store, "mqtt-commit")
        self.connected = threading.Event()
        self.problem: str | None = None  # why we are not connected, while we are not
        self.chunk_limit = p.MAX_CHUNK  # lowered when the broker announces a maximum packet size

    # --- the link's callbacks -------------------------------------------------------------------

    def _on_connect(self, ack: Connack) -> None:
        max_packet = ack.props.get(MAXIMUM_PACKET_SIZE)
        if isinstance(max_packet, int) and max_packet:
            with self._lock:
                self.chunk_limit = chunk_limit_for_packet(max_packet, len(self.prefix))
                for asm in self._assemblers.values():
                    asm.chunk_limit = self.chunk_limit
            log.info("mqtt: broker takes packets up to %d bytes", max_packet)
        self.problem = None
        self.metrics.link_up.labels("mqtt").set(1)
        self.connected.set()
        log.info("mqtt: connected to %s (session present: %s)", self._broker, ack.session_present)

    def _on_message(self, topic: str, payload: bytes) -> None:
        # returning from here is what lets the link send PUBACK, so a capture frame is
        # acknowledged to the broker only after it was handled (and, for the last chunk, committed)
        try:
            self.handle(topic, payload)
        except Exception:
            log.exception("mqtt: message on %s could not be handled", topic)
            self.metrics.rejected.labels("mqtt", "internal_error").inc()

    def _on_dropped(self, topic: str, reason: str, detail: str) -> None:
        self.metrics.rejected.labels("mqtt", reason).inc()
        log.warning("mqtt: dropped a message on %s: %s", topic or "(unreadable topic)", detail)

    # --- message handling -----------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(self.prefix):
            self.metrics.rejected.labels("mqtt", "bad_topic").inc()
            return
        parts = topic[len(self.prefix) :].split("/")
        if len(parts) != 2 or parts[1] not in p.MQTT_UP_TOPICS:
            self.metrics.rejected.labels("mqtt", "bad_topic").inc()
            log.warning("mqtt: message on unexpected topic %s", topic)
            return
        unit, kind = parts
        if not p.UNIT_ID_RE.match(unit):
            self.metrics.rejected.labels("mqtt", "bad_unit_id").inc()
            log.warning("mqtt: topic %s names an invalid unit id", topic)
            return
        try:
            frame = p.decode_frame(payload, self.limits.max_frame_payload)
        except p.ProtocolError as exc:
            self.metrics.rejected.labels("mqtt", "bad_frame").inc()
            log.warning("mqtt: unit %s sent a bad frame on %s: %s", unit, kind, exc)
            return
        if frame.type not in p.MQTT_UP_TOPICS[kind]:
            self.metrics.rejected.labels("mqtt", "wrong_topic").inc()
            log.warning("mqtt: unit %s sent %s on topic %s", unit, frame.type.name, kind)
            return
        with self._lock:
            self._assembler(unit).handle_frame(frame, topic_unit=unit)

    def _assembler(self, unit: str) -> Assembler:
        asm = self._assemblers.get(unit)
        if asm is None:
            on_unit = self.on_unit
            asm = Assembler(
                self.store,
                self.metrics,
                self.limits,
                "mqtt",
                partial(self.send, unit),
                link=f"mqtt:{unit}",
                on_unit=(lambda u: on_unit(u, self)) if on_unit else None,
                on_stored=self.on_stored,
                committer=self._committer,
                chunk_limit=self.chunk_limit,
                unit_config=self.unit_config,
            )
            self._assemblers[unit] = asm
        return asm

    def send(self, unit: str, msg: p.Message, seq: int = 0, *, retain: bool = False) -> None:
        """Publish a reply or a command to a unit (ACK/NAK on …/ack, commands on …/cmd);
        `retain` keeps a CONFIG at the broker for a unit that subscribes later (deep sleep)."""
        link = self._link
        if link is None:
            raise ConnectionError("mqtt is not connected")
        kind = "ack" if msg.TYPE in (p.FrameType.ACK, p.FrameType.NAK) else "cmd"
        link.publish(f"{self.prefix}{unit}/{kind}", p.encode_frame(msg, seq), retain=retain)

    # --- worker ---------------------------------------------------------------------------------

    def _make_link(self) -> MqttLink:
        s = self.settings
        password = read_secret(s.password_file, "mqtt.password_file") if s.password_file else None
        settings = LinkSettings(
            host=s.host,
            port=s.port,
            client_id=s.client_id or f"fieldstation-{self.station_id}",
            v5=s.protocol == "5",
            keepalive_s=s.keepalive_s,
            session_expiry_s=s.session_expiry_s,
            # the largest frame a unit may send, in a PUBLISH with the longest topic we take
            max_packet=self.limits.max_frame_payload + p.OVERHEAD + 1024,
            username=s.username,
            password=password,
            tls_ca_file=s.tls_ca_file,
        )
        topics = [self.prefix + f"+/{kind}" for kind in p.MQTT_UP_TOPICS]
        return MqttLink(
            settings,
            topics,
            self._on_message,
            on_dropped=self._on_dropped,
        )

    def run(self, stop: threading.Event) -> None:
        link = self._make_link()
        self._link = link
        # this run's end, whatever ends it: a network thread never outlives its run to fight the
        # next run's link for the session
        ended = threading.Event()
        network = threading.Thread(
            target=self._network, args=(link, ended), name="mqtt-network", daemon=True
        )
        network.start()
        try:
            while not stop.wait(1.0):
                if not network.is_alive():
                    raise RuntimeError("the mqtt network thread died")
                with self._lock:
                    for asm in self._assemblers.values():
                        if asm.open:
                            asm.expire()
        finally:
            ended.set()
            network.join(timeout=10)  # it stops reading within a second; the socket stays open
            # captures queued are stored and their ACKs written while the link is still up, so
            # a unit need not send them again after the restart
            self._committer.shutdown()
            link.close()
            self._committer = CommitQueue(self.store, "mqtt-commit")
            for asm in self._assemblers.values():
                asm.committer = self._committer
            self._link = None
            self.connected.clear()
            self.metrics.link_up.labels("mqtt").set(0)

    def _network(self, link: MqttLink, ended: threading.Event) -> None:
        """Connect, serve, and after any loss reconnect with jittered exponential backoff; the
        backoff starts again only after a connection that lasted (a broker that drops us at
        once, or a packet it sends again after every reconnect, must not make a fast loop)."""
        failures = 0
        while not ended.is_set():
            try:
                self._on_connect(link.connect())
            except (OSError, MqttProtocolError) as exc:
                link.close(farewell=False)
                failures += 1
                self._down(exc, failures == 1, connected=False)
                ended.wait(self._backoff(failures))
                continue
            began = time.monotonic()
            try:
                link.serve(ended)
            except (OSError, MqttProtocolError) as exc:
                if ended.is_set():
                    return
                link.close(farewell=False)
                failures = 1 if time.monotonic() - began > STABLE_S else failures + 1
                self._down(exc, True, connected=True)
                ended.wait(self._backoff(failures))

    def _down(self, exc: BaseException, loud: bool, *, connected: bool) -> None:
        self.connected.clear()
        self.metrics.link_up.labels("mqtt").set(0)
        if isinstance(exc, BrokerRefused):
            self.problem = f"broker {self._broker}: {exc}"
        elif connected:
            self.problem = f"disconnected from {self._broker} ({exc}); reconnecting"
        else:
            self.problem = f"cannot reach broker {self._broker} ({exc}); retrying with backoff"
        if loud:
            log.warning("mqtt: %s", self.problem)

    def _backoff(self, failures: int) -> float:
        """1 s, 2 s, 4 s … up to reconnect_max_s, each less a random quarter so that a station
        and its neighbours do not all knock at once."""
        top = min(self.settings.reconnect_max_s, 2.0 ** (failures - 1))
        return top * (1 - 0.25 * random.random())

    @property
    def _broker(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def alarms(self) -> list[Alarm]:
        """The broker link as an alarm while it is down, in words."""
        problem = self.problem
        if problem is None or self.connected.is_set():
            return []
        return [Alarm("mqtt", self._broker, problem)]


def chunk_limit_for_packet(max_packet: int, prefix_len: int) -> int:
    """The largest chunk a unit can PUBLISH under a broker's Maximum Packet Size (MQTT 5 CONNACK):
    the packet less its fixed header (5), topic (2 + prefix + the longest unit id + "/capture"),
    packet id (2), properties length (1), and the frame's header, CRC and chunk head."""
    topic = 2 + prefix_len + 32 + len("/capture")
    return max(1, max_packet - 5 - topic - 2 - 1 - p.OVERHEAD - p.CHUNK_HEAD_SIZE)
