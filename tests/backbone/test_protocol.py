"""The wire codec against the committed test vectors, and against hostile bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import protocol as p

VECTORS = Path(__file__).parents[2] / "esp32" / "test-vectors"
FRAME_FILES = sorted(f for f in VECTORS.glob("*.json") if not f.name.startswith("stream-"))


def test_vectors_are_committed():
    assert len(FRAME_FILES) >= 10


@pytest.mark.parametrize("path", FRAME_FILES, ids=lambda f: f.stem)
def test_vector_decodes_to_its_json(path: Path):
    doc = json.loads(path.read_text())
    frame = p.decode_frame(bytes.fromhex(doc["frame_hex"]))
    assert frame.type.name == doc["type"]
    assert frame.seq == doc["seq"]
    assert frame.message().to_json() == doc["decoded"]


@pytest.mark.parametrize("path", FRAME_FILES, ids=lambda f: f.stem)
def test_vector_reencodes_byte_for_byte(path: Path):
    doc = json.loads(path.read_text())
    cls = p.MESSAGES[doc["type_code"]]
    fields = dict(doc["decoded"])
    if cls is p.CaptureChunk:
        fields["data"] = bytes.fromhex(fields["data"])
    assert p.encode_frame(cls(**fields), doc["seq"]).hex() == doc["frame_hex"]


def test_stream_vector_resynchronises_after_noise():
    doc = json.loads((VECTORS / "stream-noise.json").read_text())
    decoder = p.StreamDecoder()
    frames = list(decoder.feed(bytes.fromhex(doc["stream_hex"])))
    assert [(f.type.name, f.seq) for f in frames] == [(e["type"], e["seq"]) for e in doc["frames"]]
    assert [f.message().to_json() for f in frames] == [e["decoded"] for e in doc["frames"]]
    assert decoder.crc_errors == 1
    assert decoder.noise_bytes > 0


def test_stream_decoder_handles_one_byte_at_a_time():
    frames = [p.encode_frame(p.Telemetry("u1", 3000 + i), i) for i in range(5)]
    decoder = p.StreamDecoder()
    got = []
    for byte in b"".join(frames):
        got.extend(decoder.feed(bytes([byte])))
    assert [f.seq for f in got] == list(range(5))


def test_chunking_round_trip():
    jpeg = b"\xff\xd8" + bytes(range(256)) * 40 + b"\xff\xd9"
    msgs = p.chunk_capture("cam-1", 9, jpeg, 1000, 5)
    begin = msgs[0]
    assert isinstance(begin, p.CaptureBegin) and begin.chunk_count == len(msgs) - 1
    assert b"".join(m.data for m in msgs[1:]) == jpeg
    assert begin.image_crc32 == p.crc32(jpeg)


def test_invalid_unit_id_is_refused_on_encode_and_decode():
    with pytest.raises(p.ProtocolError, match="unit_id"):
        p.Hello("Bad/Unit", "1", "esp32", "00:00:00:00:00:00").encode_payload()
    payload = bytes([4]) + b"a+b#" + b"\x00" * 20
    with pytest.raises(p.ProtocolError, match="unit id"):
        p.Telemetry.decode_payload(payload)


def test_newer_version_is_not_misread():
    frame = bytearray(p.encode_frame(p.Ack(1), 1))
    frame[2] = 2
    with pytest.raises(p.ProtocolError, match="version 2"):
        p.decode_frame(bytes(frame))


# --- hostile bytes ------------------------------------------------------------------------------

messages = st.one_of(
    st.builds(
        p.Telemetry,
        st.just("u1"),
        st.integers(0, 65535),
        st.integers(-32768, 32767),
        st.integers(-128, 127),
        st.integers(0, 2**32 - 1),
        st.integers(0, 65535),
    ),
    st.builds(p.Ack, st.integers(0, 2**32 - 1), st.integers(0, 1)),
    st.builds(
        p.CaptureChunk,
        st.integers(0, 2**32 - 1),
        st.integers(0, 65535),
        st.binary(min_size=1, max_size=300),
    ),
    st.builds(
        p.Nak, st.integers(0, 2**32 - 1), st.sampled_from(list(p.NakReason)), st.text(max_size=40)
    ),
)


@given(st.binary(max_size=2000))
@settings(max_examples=300)
def test_random_noise_never_crashes_and_yields_only_valid_frames(noise: bytes):
    decoder = p.StreamDecoder()
    for frame in decoder.feed(noise):
        # a frame found in noise passed its CRC; decoding its payload may fail, but only cleanly
        try:
            frame.message()
        except p.ProtocolError:
            pass


@given(
    st.lists(messages, min_size=1, max_size=5),
    st.lists(st.binary(max_size=50), min_size=6, max_size=6),
)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_frames_between_noise_are_all_recovered(msgs, noises):
    stream = b""
    for i, msg in enumerate(msgs):
        # noise that itself holds no complete frame cannot hide the real ones
        stream += noises[i].replace(p.SYNC, b"") + p.encode_frame(msg, i)
    decoder = p.StreamDecoder()
    got = [f.message() for f in decoder.feed(stream)]
    assert got == msgs


@given(messages, st.integers(min_value=0), st.integers(0, 7))
@settings(max_examples=300)
def test_a_bit_flip_is_never_accepted_as_a_different_frame(msg, where, bit):
    frame = bytearray(p.encode_frame(msg, 1))
    i = where % len(frame)
    frame[i] ^= 1 << bit
    decoder = p.StreamDecoder()
    for f in decoder.feed(bytes(frame)):
        assert f.message() == msg  # only possible if the flip hit nothing that matters


@given(messages, st.integers(min_value=1))
def test_truncated_frame_is_rejected_with_a_reason(msg, cut):
    frame = p.encode_frame(msg, 1)
    short = frame[: len(frame) - 1 - (cut % (len(frame) - 1))]
    with pytest.raises(p.ProtocolError):
        p.decode_frame(short)
    assert list(p.StreamDecoder().feed(short)) == []


@given(st.sampled_from(sorted(p.MESSAGES)), st.binary(max_size=300))
@settings(max_examples=500)
def test_random_payloads_decode_or_fail_cleanly(ftype, payload):
    try:
        p.MESSAGES[ftype].decode_payload(payload)
    except p.ProtocolError:
        pass


@given(st.binary(max_size=100), st.integers(0, 65535))
def test_absurd_length_field_is_noise(tail, length):
    header = p.HEADER.pack(p.SYNC, p.VERSION, p.FrameType.CAPTURE_CHUNK, 1, length)
    decoder = p.StreamDecoder(max_payload=1024)
    frames = list(decoder.feed(header + tail))
    if length > 1024:
        assert frames == [] or all(len(f.payload) <= 1024 for f in frames)


@given(st.lists(messages, min_size=1, max_size=8), st.lists(st.integers(1, 400), min_size=1))
@settings(max_examples=300)
def test_a_clean_stream_in_any_split_yields_every_frame_and_no_noise(msgs, cuts):
    stream = b"".join(p.encode_frame(m, i) for i, m in enumerate(msgs))
    decoder = p.StreamDecoder()
    got, i, k = [], 0, 0
    while i < len(stream):
        size = cuts[k % len(cuts)]
        got.extend(f.message() for f in decoder.feed(stream[i : i + size]))
        # a CRC byte that happens to be A5 must not be counted, or re-read, as a sync start
        assert decoder.noise_bytes == 0
        i, k = i + size, k + 1
    assert got == msgs
    assert decoder.crc_errors == 0


def test_frame_ending_in_a5_then_more_frames():
    for seq in range(2000):  # find a frame whose CRC's last byte is A5
        frame = p.encode_frame(p.Ack(seq), seq)
        if frame[-1] == 0xA5:
            break
    else:
        raise AssertionError("no frame with a trailing A5 in 2000 tries")
    decoder = p.StreamDecoder()
    assert [f.seq for f in decoder.feed(frame)] == [seq]
    assert decoder.noise_bytes == 0 and decoder.buffered == 0
    assert [f.seq for f in decoder.feed(p.encode_frame(p.Ack(1), 7))] == [7]
    assert decoder.noise_bytes == 0
