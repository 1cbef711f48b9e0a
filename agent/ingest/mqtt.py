"""MQTT ingest: paho-mqtt 2.x, QoS 1, a persistent session, reconnect with backoff."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import paho.mqtt.client as mqtt
import tenacity
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent import protocol as p
from agent.config import IngestSection, MqttSection, read_secret
from agent.health import Alarm
from agent.ingest.assembler import Assembler
from agent.ingest.commits import CommitQueue
from agent.metrics import Metrics
from agent.store import Store

log = logging.getLogger(__name__)


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
        self._client: mqtt.Client | None = None
        self._lock = threading.Lock()  # paho's thread assembles, ours expires: one at a time
        # the MQTT PUBACK need not wait for the commit: the unit keeps its copy until our
        # protocol ACK, which the commit queue sends after the durable commit
        self._committer = CommitQueue(store, "mqtt-commit")
        self.connected = threading.Event()
        self.problem: str | None = None  # why we are not connected, while we are not
        self.chunk_limit = p.MAX_CHUNK  # lowered when the broker announces a maximum packet size

    # --- paho wiring ----------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        v5 = s.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id or f"fieldstation-{self.station_id}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            # a persistent session: QoS 1 messages sent while we restart wait at the broker
            clean_session=None if v5 else False,
        )
        if s.username:
            password = None
            if s.password_file:
                password = read_secret(s.password_file, "mqtt.password_file")
            client.username_pw_set(s.username, password)
        if s.tls_ca_file:
            client.tls_set(ca_certs=s.tls_ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.max_inflight_messages_set(64)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _connect_properties(self) -> Properties | None:
        if self.settings.protocol != "5":
            return None
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s
        return props

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,  # paho's userdata slot, unused here
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("mqtt: broker refused the connection: %s", reason_code)
            self.problem = f"broker {self._broker} refused the station: {reason_code}"
            return
        self.problem = None
        max_packet = getattr(properties, "MaximumPacketSize", None) if properties else None
        if max_packet:
            with self._lock:
                self.chunk_limit = chunk_limit_for_packet(int(max_packet), len(self.prefix))
                for asm in self._assemblers.values():
                    asm.chunk_limit = self.chunk_limit
            log.info("mqtt: broker takes packets up to %d bytes", max_packet)
        no_delay(client)
        topics = [(self.prefix + f"+/{kind}", 1) for kind in p.MQTT_UP_TOPICS]
        client.subscribe(topics)
        self.metrics.link_up.labels("mqtt").set(1)
        self.connected.set()
        log.info(
            "mqtt: connected to %s:%d (session present: %s)",
            self.settings.host,
            self.settings.port,
            flags.session_present,
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        self.metrics.link_up.labels("mqtt").set(0)
        if reason_code != 0:
            log.warning("mqtt: disconnected (%s)", reason_code)
            if self.problem is None:
                self.problem = f"disconnected from {self._broker} ({reason_code}); reconnecting"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # returning from here is what lets paho send PUBACK, so a capture frame is acknowledged
        # to the broker only after it was handled (and, for the last chunk, committed)
        try:
            self.handle(message.topic, bytes(message.payload))
        except Exception:
            log.exception("mqtt: message on %s could not be handled", message.topic)
            self.metrics.rejected.labels("mqtt", "internal_error").inc()

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
        client = self._client
        if client is None:
            raise ConnectionError("mqtt is not connected")
        kind = "ack" if msg.TYPE in (p.FrameType.ACK, p.FrameType.NAK) else "cmd"
        client.publish(
            f"{self.prefix}{unit}/{kind}", p.encode_frame(msg, seq), qos=1, retain=retain
        )

    # --- worker ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        client = self._make_client()
        self._client = client
        s = self.settings
        # after the first connection paho's own network thread reconnects, with this backoff
        client.reconnect_delay_set(min_delay=1, max_delay=int(s.reconnect_max_s))

        def pause(seconds: float) -> None:
            stop.wait(seconds)  # a stop request ends the backoff at once

        retry = tenacity.Retrying(
            wait=tenacity.wait_exponential_jitter(initial=1, max=s.reconnect_max_s),
            retry=tenacity.retry_if_exception_type(OSError),
            stop=lambda _state: stop.is_set(),
            sleep=pause,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            for attempt in retry:
                with attempt:
                    client.connect(
                        s.host,
                        s.port,
                        keepalive=s.keepalive_s,
                        clean_start=False
                        if s.protocol == "5"
                        else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                        properties=self._connect_properties(),
                    )
        except OSError:
            if stop.is_set():
                return
            raise
        # paho's loop_start() in a thread we hold, so its health is ours to see
        network = threading.Thread(
            target=client.loop_forever,
            kwargs={"retry_first_connection": True},
            name="mqtt-network",
            daemon=True,
        )
        network.start()
        try:
            while not stop.wait(1.0):
                if not network.is_alive():
                    raise RuntimeError("paho network thread died")
                with self._lock:
                    for asm in self._assemblers.values():
                        if asm.open:
                            asm.expire()
        finally:
            try:
                client.disconnect()
            except Exception:
                pass
            self._committer.shutdown()  # captures queued are stored and answered before we stop
            self._committer = CommitQueue(self.store, "mqtt-commit")
            for asm in self._assemblers.values():
                asm.committer = self._committer
            for _ in range(10):  # disconnect() ends loop_forever; a racing reconnect undoes it
                network.join(timeout=1)
                if not network.is_alive():
                    break
                try:
                    client.disconnect()
                except Exception:
                    pass
            self._client = None
            self.connected.clear()
            self.metrics.link_up.labels("mqtt").set(0)

    @property
    def _broker(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def alarms(self) -> list[Alarm]:
        """The broker link as an alarm while it is down, in words."""
        problem = self.problem
        if problem is None or self.connected.is_set():
            return []
        return [Alarm("mqtt", self._broker, problem)]

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.problem = f"cannot reach broker {self._broker} ({exc}); retrying with backoff"
        if state.attempt_number == 1:
            log.warning(
                "mqtt: cannot reach broker %s:%d (%s); retrying with backoff",
                self.settings.host,
                self.settings.port,
                exc,
            )


def chunk_limit_for_packet(max_packet: int, prefix_len: int) -> int:
    """The largest chunk a unit can PUBLISH under a broker's Maximum Packet Size (MQTT 5 CONNACK):
    the packet less its fixed header (5), topic (2 + prefix + the longest unit id + "/capture"),
    packet id (2), properties length (1), and the frame's header, CRC and chunk head."""
    topic = 2 + prefix_len + 32 + len("/capture")
    return max(1, max_packet - 5 - topic - 2 - 1 - p.OVERHEAD - p.CHUNK_HEAD_SIZE)


def no_delay(client: mqtt.Client) -> None:
    """Send small frames (ACKs, the last chunk) at once instead of waiting on Nagle's ~40 ms."""
    sock = client.socket()
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
