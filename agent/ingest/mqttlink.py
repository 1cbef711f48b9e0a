"""The station's connection to the MQTT broker: one persistent QoS 1 session, kept up.

Why not paho: every capture over MQTT is six packets on this link (BEGIN and its chunk in, their
two PUBACKs out, the ACK out and its PUBACK in), and a general client's packet objects, properties
and wake-up pipe cost more CPU per capture than the station's durable commit does. This link does
only what the station needs: it subscribes once, hands each message to `on_message` and
acknowledges it when that returns, and publishes at QoS 1, resending what the broker has not
acknowledged after a reconnect.

Threads: `run` is the link's own thread (it reads, pings and reconnects); `publish` may be called
from any thread and writes at once under the socket's lock. Reads take that lock only while the
bytes are taken, never while waiting for them, so a TLS socket is never used by two threads at
once.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.ingest import mqttwire as w

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S = 10.0  # a write the broker does not take within this is a dead link
INFLIGHT = 64  # our QoS 1 publishes unacknowledged at once, unless the broker allows fewer


@dataclass(frozen=True)
class LinkSettings:
    host: str
    port: int
    client_id: str
    v5: bool
    keepalive_s: int
    session_expiry_s: int
    max_packet: int  # the largest packet we take (MQTT 5: told to the broker)
    username: str = ""
    password: str | None = None
    tls_ca_file: str = ""


class LinkDown(ConnectionError):
    """The connection ended; `run` reconnects."""


class BrokerRefused(ConnectionRefusedError):
    """The broker answered and refused: the station, or its subscription (not a closed port)."""


class MqttLink:
    def __init__(
        self,
        settings: LinkSettings,
        topics: list[str],
        on_message: Callable[[str, bytes], None],
        *,
        on_dropped: Callable[[str, str, str], None] = lambda topic, reason, detail: None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.on_message = on_message
        self.on_dropped = on_dropped  # (topic, reason, words): a message we acknowledged unread
        self._io = threading.Lock()  # the socket, the packet ids, the queues below
        self._sock: socket.socket | None = None
        self._next_id = 0
        # sent, not yet acknowledged by the broker (resent after a reconnect), and waiting for
        # room under the broker's Receive Maximum or for a connection
        self._inflight: OrderedDict[int, tuple[str, bytes, bool]] = OrderedDict()
        self._waiting: deque[tuple[str, bytes, bool]] = deque()
        self._room = INFLIGHT
        self._subscribing = 0  # the SUBSCRIBE's packet id until its SUBACK
        self._last_sent = 0.0
        self._reader = w.PacketReader(settings.max_packet)
        self._keepalive = settings.keepalive_s

    # --- publishing (any thread) ----------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """QoS 1: sent now if connected and the broker has room, else queued until it has; kept
        until the broker's PUBACK, so a reconnect resends it."""
        with self._io:
            self._waiting.append((topic, payload, retain))
            if self._sock is not None:
                try:
                    self._send_waiting()
                except OSError as exc:
                    # it stays in flight and goes again after the reconnect; waking the link's
                    # thread (its read fails now) is what starts that reconnect
                    log.info("mqtt: a write failed (%s); the link reconnects", exc)
                    try:
                        self._sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def _send_waiting(self) -> None:
        """Under `_io`, connected: send what waits while the broker has room."""
        while self._waiting and len(self._inflight) < self._room:
            topic, payload, retain = self._waiting.popleft()
            pid = self._packet_id()
            self._inflight[pid] = (topic, payload, retain)
            self._write(w.publish(topic, payload, pid, v5=self.settings.v5, retain=retain))

    def _packet_id(self) -> int:
        """The next id no packet of ours still waiting for its answer holds (MQTT's rule)."""
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._inflight and self._next_id != self._subscribing:
                return self._next_id

    def _write(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise LinkDown("not connected")
        sock.sendall(data)
        self._last_sent = time.monotonic()

    # --- the link's thread ----------------------------------------------------------------------

    def connect(self) -> w.Connack:
        """Open the socket, CONNECT, wait for CONNACK and subscribe. Raises OSError (including
        `LinkDown`, and `BrokerRefused` for a refusal) if the session did not start."""
        s = self.settings
        raw = socket.create_connection((s.host, s.port), timeout=SOCKET_TIMEOUT_S)
        sock: socket.socket = raw
        try:
            if raw.family in (socket.AF_INET, socket.AF_INET6):
                # ACKs and last chunks are small: send them now, not after Nagle's ~40 ms
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if s.tls_ca_file:
                context = ssl.create_default_context(cafile=s.tls_ca_file)
                sock = context.wrap_socket(raw, server_hostname=s.host)
            hello = w.connect(
                s.client_id,
                v5=s.v5,
                keepalive_s=s.keepalive_s,
                session_expiry_s=s.session_expiry_s,
                max_packet=s.max_packet,
                username=s.username,
                password=s.password,
            )
            sock.sendall(hello)
            reader = w.PacketReader(s.max_packet)
            ack = self._await_connack(sock, reader)
        except BaseException:
            sock.close()  # the TLS socket when there is one: it owns the descriptor now
            raise
        if ack.refused:
            sock.close()
            words = w.CONNACK_WORDS.get(ack.reason, "refused")
            raise BrokerRefused(f"broker refused the station: {words} ({ack.reason})")
        with self._io:
            self._sock = sock
            self._reader = reader
            self._keepalive = int(ack.props.get(w.SERVER_KEEP_ALIVE, s.keepalive_s) or 0)
            room = ack.props.get(w.RECEIVE_MAXIMUM, INFLIGHT)
            self._room = max(1, min(INFLIGHT, int(room) if isinstance(room, int) else INFLIGHT))
            self._subscribing = 0
            self._subscribing = self._packet_id()
            self._write(w.subscribe(self._subscribing, self.topics, v5=s.v5))
            # what the broker did not acknowledge before goes again, in order, marked as resent
            for pid, (topic, payload, retain) in self._inflight.items():
                self._write(w.publish(topic, payload, pid, v5=s.v5, retain=retain, dup=True))
            self._send_waiting()
        return ack

    def _await_connack(self, sock: socket.socket, reader: w.PacketReader) -> w.Connack:
        deadline = time.monotonic() + SOCKET_TIMEOUT_S
        while time.monotonic() < deadline:
            data = sock.recv(4096)
            if not data:
                raise LinkDown("broker closed the connection before CONNACK")
            for packet in reader.feed(data):
                if isinstance(packet, w.Packet) and packet.type == w.CONNACK:
                    return w.read_connack(packet.body, v5=self.settings.v5)
                raise w.MqttProtocolError("broker sent something before CONNACK")
        raise LinkDown("no CONNACK in time")

    def serve(self, stop: threading.Event) -> None:
        """Read and answer until the link drops (raises `LinkDown` or OSError) or `stop` is set."""
        sock = self._sock
        if sock is None:
            raise LinkDown("not connected")
        pinged = 0.0
        keepalive = self._keepalive
        while not stop.is_set():
            now = time.monotonic()
            wait = 1.0
            if keepalive:
                if pinged and now - pinged > keepalive:
                    raise LinkDown(f"no answer from the broker in {keepalive} s")
                # keepalive counts what we send (MQTT 3.1.2.10): our PUBACKs count, their
                # PUBLISHes do not
                if not pinged and now - self._last_sent >= keepalive * 0.75:
                    with self._io:
                        self._write(w.PINGREQ_PACKET)
                    pinged = now
                wait = min(wait, keepalive * 0.25)
            try:
                pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
                if not pending and not select.select([sock], [], [], wait)[0]:
                    continue
            except ValueError as exc:  # close() from another thread took the descriptor
                raise LinkDown("the link was closed") from exc
            with self._io:
                try:
                    data = self._take(sock)
                except (BlockingIOError, ssl.SSLWantReadError):
                    continue
            if not data:
                raise LinkDown("the broker closed the connection")
            pinged = 0.0  # the broker is there
            for packet in self._reader.feed(data):
                self._handle(packet)

    @staticmethod
    def _take(sock: socket.socket) -> bytes:
        """What the socket has now. A TLS socket in timeout mode would wait inside OpenSSL for
        the rest of a record, holding `_io` all the while: it reads non-blocking instead."""
        if not isinstance(sock, ssl.SSLSocket):
            return sock.recv(262144)
        sock.settimeout(0)
        try:
            return sock.recv(262144)
        finally:
            sock.settimeout(SOCKET_TIMEOUT_S)

    def _handle(self, packet: w.Packet | w.Oversized) -> None:
        v5 = self.settings.v5
        if isinstance(packet, w.Oversized):
            if packet.type != w.PUBLISH:
                raise w.MqttProtocolError(f"packet type {packet.type} of {packet.size} bytes")
            topic, pid = w.publish_head(packet.flags, packet.head, v5=v5)
            self._drop(topic, pid, "too_large", f"{packet.size} bytes, over the frame limit")
            return
        kind = packet.type
        if kind == w.PUBLISH:
            try:
                message = w.read_publish(packet.flags, packet.body, v5=v5)
            except w.MqttProtocolError as exc:
                topic, pid = w.publish_head(packet.flags, packet.body[:256], v5=v5)
                if not pid:
                    raise  # nothing to acknowledge it by: the link starts again
                self._drop(topic, pid, "malformed", f"malformed PUBLISH: {exc}")
                return
            self.on_message(message.topic, message.payload)
            if message.qos:
                # after on_message returned: a capture's last chunk is committed first
                with self._io:
                    self._write(w.puback(message.packet_id))
        elif kind == w.PUBACK:
            pid = w.read_packet_id(packet.body)
            if len(packet.body) > 2 and packet.body[2] >= 0x80:  # MQTT 5: the broker refused it
                topic = self._inflight.get(pid, ("?",))[0]
                log.warning(
                    "mqtt: the broker refused our message on %s (reason 0x%02x)",
                    topic,
                    packet.body[2],
                )
            with self._io:
                self._inflight.pop(pid, None)
                self._send_waiting()
        elif kind == w.SUBACK:
            with self._io:
                self._subscribing = 0
            refused = [c for c in w.read_suback_codes(packet.body, v5=v5) if c >= 0x80]
            if refused:
                raise BrokerRefused(f"broker refused the subscription (codes {refused})")
        elif kind == w.DISCONNECT:
            reason = packet.body[0] if packet.body else 0
            raise LinkDown(f"the broker ended the session (reason 0x{reason:02x})")
        elif kind != w.PINGRESP:
            raise w.MqttProtocolError(f"unexpected packet type {kind} from the broker")

    def _drop(self, topic: str, pid: int, reason: str, detail: str) -> None:
        """Acknowledge a message we cannot take, so the broker does not send it again after every
        reconnect, and say so."""
        self.on_dropped(topic, reason, detail)
        if pid:
            with self._io:
                self._write(w.puback(pid))

    def close(self, *, farewell: bool = True) -> None:
        """Drop the connection; `farewell` sends DISCONNECT first (a normal end: the broker keeps
        the session and what is queued for it)."""
        with self._io:
            sock, self._sock = self._sock, None
            if sock is None:
                return
            if farewell:
                try:
                    sock.sendall(w.DISCONNECT_PACKET)
                except OSError:
                    pass
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the link's thread from its wait at once
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
