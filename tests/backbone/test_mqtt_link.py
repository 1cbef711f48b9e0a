"""The station's own MQTT link: its packet decoder (outside bytes, property tests) and the link
against a real Mosquitto with a password file, with TLS, with oversized messages and while down."""

from __future__ import annotations

import datetime
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from agent import protocol as p
from agent.broker import PrivateBroker
from agent.esp32.units import virtual_unit
from agent.esp32.virtual import MqttUnitLink
from agent.ingest import mqttwire as w
from agent.ingest.mqttlink import LinkSettings, MqttLink
from agent.scenes import scene_jpeg
from tests.helpers import metric, wait_for

# --- the packet decoder --------------------------------------------------------------------------

topics = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)


def cut(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """`data` in pieces at the given offsets, as a socket may hand it over."""
    last = 0
    for c in sorted({c % (len(data) + 1) for c in cuts}):
        yield data[last:c]
        last = c
    yield data[last:]


@settings(max_examples=300, deadline=None)
@given(
    messages=st.lists(
        st.tuples(topics, st.binary(max_size=3000), st.integers(1, 65535), st.booleans()),
        min_size=1,
        max_size=6,
    ),
    v5=st.booleans(),
    cuts=st.lists(st.integers(0, 20000), max_size=12),
)
def test_publishes_come_out_whole_however_the_stream_is_cut(messages, v5, cuts):
    stream = b"".join(w.publish(t, body, pid, v5=v5, retain=r) for t, body, pid, r in messages)
    reader = w.PacketReader(limit=4096)
    got = []
    for piece in cut(stream, cuts):
        for packet in reader.feed(piece):
            assert isinstance(packet, w.Packet) and packet.type == w.PUBLISH
            m = w.read_publish(packet.flags, packet.body, v5=v5)
            got.append((m.topic, m.payload, m.packet_id, bool(packet.flags & 1)))
    assert got == [(t, body, pid, r) for t, body, pid, r in messages]


@settings(max_examples=300, deadline=None)
@given(size=st.integers(5000, 70000), cuts=st.lists(st.integers(0, 80000), max_size=12))
def test_an_oversized_publish_is_skipped_and_the_next_packet_still_read(size, cuts):
    stream = (
        w.publish("wildcam/st/u1/capture", b"x" * size, 7, v5=True)
        + w.puback(9)
        + w.publish("wildcam/st/u1/hello", b"hi", 8, v5=True)
    )
    reader = w.PacketReader(limit=4096)
    got = [packet for piece in cut(stream, cuts) for packet in reader.feed(piece)]
    assert len(got) == 3 and isinstance(got[0], w.Oversized)
    assert w.publish_head(got[0].flags, got[0].head, v5=True) == ("wildcam/st/u1/capture", 7)
    assert got[0].size > size and w.read_packet_id(got[1].body) == 9
    assert w.read_publish(got[2].flags, got[2].body, v5=True).payload == b"hi"


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=600), v5=st.booleans())
def test_any_bytes_from_a_broker_decode_or_raise_the_protocol_error(data, v5):
    reader = w.PacketReader(limit=256)
    try:
        for packet in reader.feed(data):
            if isinstance(packet, w.Oversized):
                w.publish_head(packet.flags, packet.head, v5=v5)
            elif packet.type == w.PUBLISH:
                w.read_publish(packet.flags, packet.body, v5=v5)
            elif packet.type == w.CONNACK:
                w.read_connack(packet.body, v5=v5)
            elif packet.type == w.SUBACK:
                w.read_suback_codes(packet.body, v5=v5)
            else:
                w.read_packet_id(packet.body)
    except w.MqttProtocolError:
        pass


def test_connack_properties_are_read_and_an_unknown_one_refused():
    props = bytes([w.MAXIMUM_PACKET_SIZE]) + (70000).to_bytes(4, "big")
    props += bytes([w.RECEIVE_MAXIMUM]) + (10).to_bytes(2, "big")
    props += b"\x26\x00\x01k\x00\x01v"  # a user property, skipped
    props += bytes([w.REASON_STRING]) + b"\x00\x02ok"
    ack = w.read_connack(b"\x01\x00" + bytes([len(props)]) + props, v5=True)
    assert ack.session_present and not ack.refused
    assert ack.props[w.MAXIMUM_PACKET_SIZE] == 70000 and ack.props[w.RECEIVE_MAXIMUM] == 10
    with pytest.raises(w.MqttProtocolError, match="unknown property 0x7f"):
        w.read_connack(b"\x00\x00\x02\x7f\x00", v5=True)
    assert w.read_connack(b"\x00\x86", v5=True).refused


# --- the link against Mosquitto ------------------------------------------------------------------


def link_settings(broker: PrivateBroker, **kw: object) -> LinkSettings:
    base: dict[str, object] = dict(
        host="127.0.0.1",
        port=broker.port,
        client_id="st-link",
        v5=True,
        keepalive_s=30,
        session_expiry_s=600,
        max_packet=70000,
    )
    base.update(kw)
    return LinkSettings(**base)  # type: ignore[arg-type]


class Listener:
    """A paho client on the other side: publishes as a unit would, and collects what it gets."""

    def __init__(self, broker: PrivateBroker, topic: str, **tls: str) -> None:
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="listener")
        if tls:
            c.tls_set(ca_certs=tls["ca"])
        if "user" in tls:
            c.username_pw_set(tls["user"], tls["password"])
        subscribed = threading.Event()
        c.on_message = lambda cl, u, m: self.got.put((m.topic, bytes(m.payload)))
        c.on_subscribe = lambda *a: subscribed.set()
        c.connect(broker.host, broker.port)
        c.loop_start()
        c.subscribe(topic, qos=1)
        assert subscribed.wait(10)
        self.client = c

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def serving(link: MqttLink) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    t = threading.Thread(target=link.serve, args=(stop,), daemon=True)
    t.start()
    return stop, t


@pytest.fixture
def broker_files() -> Iterator[Path]:
    """A folder the broker can read after it drops root for its own user (as Debian's does)."""
    folder = Path(tempfile.mkdtemp(prefix="wildcam-broker-files-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_link_logs_in_with_a_password_file_and_says_when_the_password_is_wrong(
    broker_files: Path,
):
    folder = broker_files
    pwfile = folder / "passwd"
    pwfile.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "station", "s3cret"], check=True)
    pwfile.chmod(0o644)
    with PrivateBroker(listener=[f"password_file {pwfile}"]) as broker:
        wrong = MqttLink(link_settings(broker, username="station", password="nope"), ["t/#"], print)
        with pytest.raises(ConnectionRefusedError, match="refused the station: not authorized"):
            wrong.connect()
        got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        link = MqttLink(
            link_settings(broker, username="station", password="s3cret", v5=False),
            ["t/#"],
            lambda topic, body: got.put((topic, body)),
        )
        link.connect()
        stop, t = serving(link)
        try:
            link.publish("t/echo", b"to myself")
            assert got.get(timeout=10) == ("t/echo", b"to myself")
        finally:
            stop.set()
            t.join(5)
            link.close()


def _self_signed(folder: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it: (folder/ca.pem, server files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wildcam test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(cert.public_bytes(pem))
    (folder / "server.key").write_bytes(
        key.private_bytes(
            pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    for f in folder.glob("server.*"):
        f.chmod(0o644)
    return folder / "ca.pem"


def test_the_link_speaks_tls_to_a_broker_it_can_verify_and_carries_large_messages(
    broker_files: Path,
):
    folder = broker_files
    ca = _self_signed(folder)
    tls = [f"cafile {ca}", f"certfile {folder / 'server.pem'}", f"keyfile {folder / 'server.key'}"]
    with PrivateBroker(listener=tls) as broker:
        listener = Listener(broker, "down/#", ca=str(ca))
        got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        link = MqttLink(
            link_settings(broker, tls_ca_file=str(ca)),
            ["up/#"],
            lambda topic, body: got.put((topic, body)),
        )
        link.connect()
        stop, t = serving(link)
        try:
            big = bytes(range(256)) * 200  # 51,200 bytes: many TLS records each way
            listener.client.publish("up/u1", big, qos=1).wait_for_publish(10)
            assert got.get(timeout=10) == ("up/u1", big)
            link.publish("down/u1", big[::-1])
            assert listener.got.get(timeout=10) == ("down/u1", big[::-1])
        finally:
            stop.set()
            t.join(5)
            link.close()
            listener.close()
        # a broker whose certificate the station cannot verify is refused by the station
        other = folder / "other"
        other.mkdir()
        stranger = MqttLink(link_settings(broker, tls_ca_file=str(_self_signed(other))), [], print)
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            stranger.connect()


def test_publishes_made_while_down_go_out_after_the_connection_and_each_once(mosquitto):
    listener = Listener(mosquitto, "down/#")
    link = MqttLink(link_settings(mosquitto), ["up/#"], lambda topic, body: None)
    for i in range(100):  # more than the 64 the broker takes in flight at once
        link.publish("down/u1", i.to_bytes(2, "big"))
    assert listener.got.empty()
    link.connect()
    stop, t = serving(link)
    try:
        got = [listener.got.get(timeout=10)[1] for _ in range(100)]
        assert got == [i.to_bytes(2, "big") for i in range(100)]
        wait_for(lambda: not link._inflight and not link._waiting, what="every PUBACK back")
    finally:
        stop.set()
        t.join(5)
        link.close()
        listener.close()


def test_an_idle_link_pings_so_the_broker_keeps_it(mosquitto):
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    # the broker drops a client silent for 1.5 keepalives (Mosquitto 2.0 within about 6 s here)
    link = MqttLink(
        link_settings(mosquitto, keepalive_s=1), ["t/#"], lambda topic, body: got.put((topic, body))
    )
    link.connect()
    stop, t = serving(link)
    try:
        assert not stop.wait(8) and t.is_alive()
        link.publish("t/after", b"still here")
        assert got.get(timeout=10) == ("t/after", b"still here")
        assert t.is_alive()
    finally:
        stop.set()
        t.join(5)
        link.close()


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_an_oversized_message_is_dropped_and_counted_and_the_station_goes_on(
    make_station, mosquitto, version
):
    station = make_station(
        f'[mqtt]\nenabled = true\nport = {mosquitto.port}\nprotocol = "{version}"\n'
        f'client_id = "st-big-{version[0]}"\n'
    )
    wait_for(station.mqtt.connected.is_set, what="broker connection")
    raw = Listener(mosquitto, "unused")
    raw.client.publish("wildcam/test-station/cam1/capture", b"\x00" * 300_000, qos=1)
    if version == "3.1.1":  # MQTT 5: we told the broker our maximum, so it never sends it
        wait_for(
            lambda: (
                metric(station, "fieldstation_rejected_total", path="mqtt", reason="too_large") == 1
            ),
            what="the oversized message counted",
        )
    unit = virtual_unit(
        f"cam-big{version[0]}",
        MqttUnitLink(mosquitto.host, mosquitto.port, "test-station", f"cam-big{version[0]}"),
    )
    assert unit.send_capture(scene_jpeg(3)).acked
    assert station.mqtt.connected.is_set() and station.mqtt.problem is None
    unit.close()
    raw.close()
    assert p.MAX_CHUNK < 300_000


def test_a_malformed_publish_is_acknowledged_dropped_and_counted_not_a_reconnect_loop():
    ours, broker_end = socket.socketpair()
    dropped: list[tuple[str, str, str]] = []

    def never(topic: str, body: bytes) -> None:
        raise AssertionError("a malformed message reached the station")

    link = MqttLink(
        LinkSettings("127.0.0.1", 1, "st", True, 60, 0, 70000),
        [],
        never,
        on_dropped=lambda *why: dropped.append(why),
    )
    link._sock = ours  # as connect() leaves it
    # MQTT 5 properties naming an id that does not exist (0x7f)
    body = b"\x00\x15wildcam/st/u1/capture" + (77).to_bytes(2, "big") + b"\x02\x7f\x00frame"
    link._handle(w.Packet(w.PUBLISH, 0x02, body))
    assert [d[:2] for d in dropped] == [("wildcam/st/u1/capture", "malformed")]
    assert "unknown property 0x7f" in dropped[0][2]
    # acknowledged, so the broker does not deliver it again after every reconnect
    assert broker_end.recv(16) == w.puback(77)
    ours.close()
    broker_end.close()


def test_a_link_that_drops_at_once_backs_off_longer_each_time(tmp_path):
    from agent.config import parse_config
    from agent.ingest.mqtt import MqttIngest
    from agent.metrics import Metrics
    from agent.store import Store

    config = parse_config("[mqtt]\nenabled = true\nreconnect_max_s = 60\n", "<test>")
    ingest = MqttIngest(config.mqtt, "st", Store(tmp_path / "b.db"), Metrics(), config.ingest)

    class Dropping:  # connects, then the broker ends the session at once (a duplicate id)
        def connect(self) -> w.Connack:
            return w.Connack(True, 0, {})

        def serve(self, ended: threading.Event) -> None:
            raise ConnectionResetError("the broker ended the session")

        def close(self, *, farewell: bool = True) -> None:
            pass

    waits: list[float] = []

    class Ended(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout or 0.0)
            if len(waits) == 5:
                self.set()
            return self.is_set()

    ingest._network(Dropping(), Ended())  # type: ignore[arg-type]
    assert waits == sorted(waits) and waits[-1] > 4 * waits[0], waits
