"""The firmware's portable C core (esp32/firmware/components/wildcam_core) loaded with ctypes.

`load_core()` compiles libwildcam_core.so with the host's C compiler on first use into a cache
folder keyed by a hash of the sources, so the virtual unit runs exactly the code the ESP32 runs.
"""

from __future__ import annotations

import ctypes as C
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SOURCES = ("src/wc_proto.c", "src/wc_config.c", "src/wc_unit.c")
CFLAGS = ("-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared")


class CoreUnavailable(RuntimeError):
    """The C core cannot be built or loaded here (no compiler, no sources)."""


def core_source_dir() -> Path:
    """Where the core's C sources are: $WILDCAM_CORE_SRC, else the repository checkout."""
    env = os.environ.get("WILDCAM_CORE_SRC")
    if env:
        return Path(env)
    return (
        Path(__file__).resolve().parents[2] / "esp32" / "firmware" / "components" / "wildcam_core"
    )


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fieldstation"


def _source_hash(src: Path, cc: str) -> str:
    h = hashlib.sha256(cc.encode() + b"\0" + " ".join(CFLAGS).encode())
    files = [src / s for s in SOURCES] + sorted((src / "include").glob("*.h"))
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def build_core(src: Path | None = None, out_dir: Path | None = None) -> Path:
    """Compile the core into a shared library (cached by source hash); return its path."""
    src = src or core_source_dir()
    if not (src / "src" / "wc_proto.c").is_file():
        raise CoreUnavailable(f"C core sources not found in {src} (set WILDCAM_CORE_SRC)")
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise CoreUnavailable("no C compiler (gcc/cc) on PATH: apt-get install gcc")
    out_dir = out_dir or cache_dir()
    lib = out_dir / f"libwildcam_core-{_source_hash(src, cc)}.so"
    if lib.is_file():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    # build to a temp name and rename: two processes building at once never load a half-written file
    fd, tmp = tempfile.mkstemp(prefix=".libwildcam_core-", suffix=".so", dir=out_dir)
    os.close(fd)
    cmd = [cc, *CFLAGS, "-I", str(src / "include"), *(str(src / s) for s in SOURCES), "-o", tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise CoreUnavailable(f"building the C core failed:\n{proc.stderr.strip()}")
    os.replace(tmp, lib)
    log.info("built the firmware core: %s", lib)
    return lib


# --- ctypes mirrors of the public structs (checked against wc_sizeof at load time) ---------------

LOG_FN = C.CFUNCTYPE(None, C.c_void_p, C.c_int, C.c_char_p)
NOW_FN = C.CFUNCTYPE(C.c_uint64, C.c_void_p)
EPOCH_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.POINTER(C.c_uint64))
SET_EPOCH_FN = C.CFUNCTYPE(None, C.c_void_p, C.c_uint64)
SEND_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_uint8, C.POINTER(C.c_uint8), C.c_size_t)


class Config(C.Structure):
    _fields_ = [
        ("unit_id", C.c_char * 33),
        ("station_id", C.c_char * 33),
        ("wifi_ssid", C.c_char * 33),
        ("wifi_pass", C.c_char * 65),
        ("mqtt_uri", C.c_char * 129),
        ("transport", C.c_uint8),
        ("capture_interval_s", C.c_uint32),
        ("frame_size", C.c_uint8),
        ("jpeg_quality", C.c_uint8),
        ("pir_enabled", C.c_uint8),
        ("sleep_start_min", C.c_uint16),
        ("sleep_end_min", C.c_uint16),
        ("tz_offset_min", C.c_int16),
        ("chunk_size", C.c_uint16),
        ("ack_timeout_ms", C.c_uint32),
        ("max_attempts", C.c_uint8),
        ("linger_ms", C.c_uint32),
    ]


class CaptureMeta(C.Structure):
    _fields_ = [
        ("capture_id", C.c_uint32),
        ("size", C.c_uint32),
        ("unit_time", C.c_uint64),
        ("time_kind", C.c_uint8),
        ("trigger", C.c_uint8),
    ]


class Stats(C.Structure):
    _fields_ = [
        (name, C.c_uint32)
        for name in (
            "frames_in",
            "bad_frames",
            "captures",
            "sent",
            "acks",
            "naks",
            "timeouts",
            "dropped",
            "capture_errors",
        )
    ]


class Action(C.Structure):
    _fields_ = [("kind", C.c_uint8), ("wait_ms", C.c_uint32), ("sleep_s", C.c_uint32)]


CAPTURE_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.POINTER(Config), C.POINTER(CaptureMeta))
META_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_uint32, C.POINTER(CaptureMeta))
READ_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_uint32, C.c_uint32, C.POINTER(C.c_uint8), C.c_uint32)
DELETE_FN = C.CFUNCTYPE(None, C.c_void_p, C.c_uint32)
OLDEST_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.POINTER(C.c_uint32))
U16_FN = C.CFUNCTYPE(C.c_uint16, C.c_void_p)
I16_FN = C.CFUNCTYPE(C.c_int16, C.c_void_p)
I8_FN = C.CFUNCTYPE(C.c_int8, C.c_void_p)
ON_MSG_FN = C.CFUNCTYPE(None, C.c_void_p, C.c_uint8, C.POINTER(C.c_uint8), C.c_size_t)
GET_NUM_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_char_p, C.c_int, C.POINTER(C.c_uint32))
SET_NUM_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_char_p, C.c_int, C.c_uint32)
GET_STR_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_char_p, C.c_void_p, C.c_size_t)
SET_STR_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_char_p, C.c_char_p)


class KV(C.Structure):
    _fields_ = [
        ("get_num", GET_NUM_FN),
        ("set_num", SET_NUM_FN),
        ("get_str", GET_STR_FN),
        ("set_str", SET_STR_FN),
    ]


class Hal(C.Structure):
    _fields_ = [
        ("now_ms", NOW_FN),
        ("epoch_ms", EPOCH_FN),
        ("set_epoch_ms", SET_EPOCH_FN),
        ("send", SEND_FN),
        ("capture", CAPTURE_FN),
        ("stored_meta", META_FN),
        ("stored_read", READ_FN),
        ("stored_delete", DELETE_FN),
        ("stored_oldest", OLDEST_FN),
        ("stored_count", U16_FN),
        ("battery_mv", U16_FN),
        ("temperature_cc", I16_FN),
        ("rssi_dbm", I8_FN),
        ("log", LOG_FN),
        ("on_message", ON_MSG_FN),
        ("kv", KV),
    ]


KV_TYPES = {0: "u8", 1: "u16", 2: "u32", 3: "i16", 4: "str"}

_lock = threading.Lock()
_lib: C.CDLL | None = None


def _declare(lib: C.CDLL) -> None:
    u8p = C.POINTER(C.c_uint8)
    sig = {
        "wc_crc32": (C.c_uint32, [C.c_uint32, u8p, C.c_size_t]),
        "wc_reencode_frame": (
            C.c_int,
            [u8p, C.c_size_t, C.c_size_t, u8p, C.c_size_t, C.POINTER(C.c_size_t)],
        ),
        "wc_err_str": (C.c_char_p, [C.c_int]),
        "wc_stream_sizeof": (C.c_size_t, []),
        "wc_stream_init": (C.c_int, [C.c_void_p, u8p, C.c_size_t, C.c_size_t]),
        "wc_stream_feed": (C.c_size_t, [C.c_void_p, u8p, C.c_size_t]),
        "wc_stream_next": (C.c_int, [C.c_void_p, C.c_void_p]),
        "wc_sizeof": (C.c_size_t, [C.c_int]),
        "wc_unit_init": (
            C.c_int,
            [C.c_void_p, C.POINTER(Hal), C.c_void_p, C.c_char_p, C.c_char_p, u8p],
        ),
        "wc_unit_wake": (None, [C.c_void_p, C.c_uint8]),
        "wc_unit_input": (None, [C.c_void_p, u8p, C.c_size_t]),
        "wc_unit_message": (None, [C.c_void_p, u8p, C.c_size_t]),
        "wc_unit_capture": (C.c_int, [C.c_void_p, C.c_uint8]),
        "wc_unit_poll": (None, [C.c_void_p, C.POINTER(Action)]),
        "wc_unit_send_hello": (None, [C.c_void_p]),
        "wc_unit_send_config_report": (None, [C.c_void_p]),
        "wc_unit_send_telemetry": (None, [C.c_void_p]),
        "wc_unit_config": (C.POINTER(Config), [C.c_void_p]),
        "wc_unit_stats": (C.POINTER(Stats), [C.c_void_p]),
        "wc_unit_state": (C.c_int, [C.c_void_p]),
        "wc_unit_set_chunk_buffer": (None, [C.c_void_p, u8p, C.c_size_t]),
        "wc_unit_chunk_size": (C.c_uint16, [C.c_void_p]),
        "wc_unit_max_chunk": (C.c_uint16, [C.c_void_p]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    for idx, cls in ((1, Hal), (2, Config), (3, CaptureMeta), (4, Stats), (5, Action)):
        if lib.wc_sizeof(idx) != C.sizeof(cls):
            raise CoreUnavailable(
                f"C core struct {cls.__name__} is {lib.wc_sizeof(idx)} bytes, "
                f"the Python mirror {C.sizeof(cls)}: update agent/esp32/core.py"
            )


def load_core() -> C.CDLL:
    """Build (once, cached) and load the C core; raise CoreUnavailable when that cannot be done."""
    global _lib
    with _lock:
        if _lib is None:
            lib = C.CDLL(str(build_core()))
            _declare(lib)
            _lib = lib
        return _lib


def core_available() -> bool:
    try:
        load_core()
    except CoreUnavailable as exc:
        log.debug("C core unavailable: %s", exc)
        return False
    return True


def _buf(data: bytes) -> C.Array[C.c_uint8]:
    return (C.c_uint8 * max(1, len(data))).from_buffer_copy(data or b"\0")


def reencode_frame(frame: bytes, max_payload: int = 0xFFFF) -> bytes:
    """Decode one frame with the C decoder and encode it again (codec parity tests).

    Raises ValueError with the C core's reason when the frame does not decode.
    """
    lib = load_core()
    out = (C.c_uint8 * (len(frame) + 16))()
    n = C.c_size_t(0)
    rc = lib.wc_reencode_frame(_buf(frame), len(frame), max_payload, out, len(out), C.byref(n))
    if rc != 0:
        raise ValueError(lib.wc_err_str(rc).decode())
    return bytes(out[: n.value])


class CStreamDecoder:
    """The C core's serial stream decoder, same interface as agent.protocol.StreamDecoder."""

    def __init__(self, max_payload: int = 0xFFFF) -> None:
        self.lib = load_core()
        self._state = C.create_string_buffer(self.lib.wc_stream_sizeof())
        self._mem = (C.c_uint8 * (max_payload + 12))()
        rc = self.lib.wc_stream_init(self._state, self._mem, len(self._mem), max_payload)
        if rc != 0:
            raise ValueError(self.lib.wc_err_str(rc).decode())

    class _Frame(C.Structure):
        _fields_ = [
            ("type", C.c_uint8),
            ("seq", C.c_uint16),
            ("length", C.c_uint16),
            ("payload", C.POINTER(C.c_uint8)),
        ]

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Add bytes; return (type, seq, payload) of every frame now complete."""
        out: list[tuple[int, int, bytes]] = []
        view = memoryview(data)
        f = self._Frame()
        while True:
            took = self.lib.wc_stream_feed(self._state, _buf(bytes(view)), len(view)) if view else 0
            view = view[took:]
            while self.lib.wc_stream_next(self._state, C.byref(f)):
                out.append((f.type, f.seq, C.string_at(f.payload, f.length)))
            if not view:
                return out

    def _counter(self, offset_field: str) -> int:
        # wc_stream_t: buf*, cap, len, consumed, max_payload (size_t), then two uint32 counters
        base = C.sizeof(C.c_void_p) + 4 * C.sizeof(C.c_size_t)
        off = base + (0 if offset_field == "noise" else 4)
        return int.from_bytes(self._state.raw[off : off + 4], "little")

    @property
    def noise_bytes(self) -> int:
        return self._counter("noise")

    @property
    def crc_errors(self) -> int:
        return self._counter("crc")
