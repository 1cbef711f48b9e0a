"""Regenerate the protocol test vectors from the station's codec.

Run from the repo root: python esp32/test-vectors/make_vectors.py
The firmware's host tests and tests/test_protocol_vectors.py read the files this writes.
"""

from __future__ import annotations

import json
from pathlib import Path

from agent import protocol as p

HERE = Path(__file__).parent
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")

VECTORS: dict[str, tuple[p.Message, int]] = {
    "hello": (p.Hello("a1b2c3d4e5f6", "1.2.0", "esp32s3", "24:0a:c4:12:34:56"), 1),
    # a unit that says how large a chunk it can send (PROTOCOL.md §3, appended field)
    "hello-max-chunk": (
        p.Hello("a1b2c3d4e5f6", "1.3.0", "esp32s3", "24:0a:c4:12:34:56", 1, 65000),
        8,
    ),
    "telemetry": (p.Telemetry("a1b2c3d4e5f6", 3712, 2150, -67, 86400, 2), 2),
    "telemetry-no-sensor": (p.Telemetry("unit-7", 3300, -32768, 0, 5, 0), 3),
    "config-report": (p.ConfigReport("unit-7", 300, 8, 12, 1, 1200, 360, 1764115200000), 4),
    "capture-begin": (
        p.CaptureBegin("a1b2c3d4e5f6", 42, len(JPEG), p.crc32(JPEG), 16, 123456, 0, 1),
        5,
    ),
    "capture-chunk-0": (p.CaptureChunk(42, 0, JPEG[:16]), 6),
    "capture-chunk-1": (p.CaptureChunk(42, 1, JPEG[16:]), 7),
    "capture-begin-epoch": (
        p.CaptureBegin("cam01", 7, 51200, 0xDEADBEEF, 4096, 1764115200123, 1, 0),
        65535,
    ),
    "ack": (p.Ack(42, 0), 100),
    "ack-duplicate": (p.Ack(42, 1), 101),
    "nak-crc": (p.Nak(42, p.NakReason.CRC_MISMATCH, "image crc 00000000 != 1c291ca3"), 102),
    "nak-no-capture": (p.Nak(p.NO_CAPTURE, p.NakReason.UNKNOWN_CAPTURE, ""), 103),
    "config": (p.Config(600, 10, 12, 1, 1200, 360, 1764115200000), 104),
    "config-no-quiet": (p.Config(0, 5, 63, 0), 105),
    "config-chunk": (p.Config(600, 10, 12, 1, 1200, 360, 1764115200000, 32768), 108),
    "config-report-chunk": (
        p.ConfigReport("unit-7", 300, 8, 12, 1, 1200, 360, 1764115200000, 32768),
        9,
    ),
    "capture-now": (p.CaptureNow(7), 106),
    "sleep-now": (p.SleepNow(3600), 107),
}


def main() -> None:
    for name, (msg, seq) in VECTORS.items():
        frame = p.encode_frame(msg, seq)
        doc = {
            "description": f"{msg.TYPE.name} frame",
            "type": msg.TYPE.name,
            "type_code": int(msg.TYPE),
            "seq": seq,
            "frame_hex": frame.hex(),
            "decoded": msg.to_json(),
        }
        (HERE / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")

    # a stream with line noise, a false sync, a corrupted frame and two good frames
    good1 = p.encode_frame(VECTORS["hello"][0], 1)
    good2 = p.encode_frame(VECTORS["telemetry"][0], 2)
    corrupt = bytearray(p.encode_frame(VECTORS["ack"][0], 9))
    corrupt[-1] ^= 0xFF
    stream = b"boot: rst:0x1\r\n" + b"\xa5\x5a\x07" + bytes(corrupt) + good1 + b"\x00\xa5" + good2
    doc = {
        "description": "noise, a bad-version sync, a CRC-corrupted frame, then two good frames",
        "stream_hex": stream.hex(),
        "frames": [
            {"type": "HELLO", "seq": 1, "decoded": VECTORS["hello"][0].to_json()},
            {"type": "TELEMETRY", "seq": 2, "decoded": VECTORS["telemetry"][0].to_json()},
        ],
    }
    (HERE / "stream-noise.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
