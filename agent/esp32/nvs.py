"""A small reader for ESP-IDF NVS partition images, to check what we are about to flash.

Our own because no packaged NVS *reader* exists (esp-idf-nvs-partition-gen only writes images).
It reads the format of ESP-IDF's nvs_flash (pages of 126 32-byte entries, CRC-checked) and
refuses anything that does not check out, naming the page and entry.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

PAGE_SIZE = 4096
ENTRY_SIZE = 32
ENTRIES_PER_PAGE = 126
FIRST_ENTRY = 64
PAGE_EMPTY = 0xFFFFFFFF
PAGE_ACTIVE = 0xFFFFFFFE
PAGE_FULL = 0xFFFFFFFC
PAGE_FREEING = 0xFFFFFFF8
ENTRY_WRITTEN = 2
ENTRY_EMPTY = 3
CHUNK_ANY = 0xFF

PRIMITIVES = {
    0x01: ("u8", "<B"),
    0x11: ("i8", "<b"),
    0x02: ("u16", "<H"),
    0x12: ("i16", "<h"),
    0x04: ("u32", "<I"),
    0x14: ("i32", "<i"),
    0x08: ("u64", "<Q"),
    0x18: ("i64", "<q"),
}
SZ, BLOB, BLOB_DATA, BLOB_IDX = 0x21, 0x41, 0x42, 0x48


class NvsFormatError(ValueError):
    """The bytes are not a valid NVS image; the message says where."""


@dataclass(frozen=True)
class NvsValue:
    type: str  # u8 i8 u16 i16 u32 i32 u64 i64 string blob
    value: int | str | bytes


def _crc(data: bytes) -> int:
    # nvs_flash uses esp_rom_crc32_le(0xffffffff, ...), which is zlib.crc32 with that start value
    return zlib.crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF


def _entry_crc(entry: bytes) -> int:
    return _crc(entry[0:4] + entry[8:32])


def _key(entry: bytes, where: str) -> str:
    raw = entry[8:24].split(b"\0", 1)[0]
    try:
        key = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise NvsFormatError(f"{where}: key is not ASCII") from exc
    if not key:
        raise NvsFormatError(f"{where}: empty key")
    return key


def read_nvs(image: bytes) -> dict[str, dict[str, NvsValue]]:
    """Parse an NVS partition image into {namespace: {key: NvsValue}}."""
    if not image or len(image) % PAGE_SIZE:
        raise NvsFormatError(f"image is {len(image)} bytes, not a whole number of 4096-byte pages")
    namespaces: dict[int, str] = {}
    items: list[tuple[int, str, NvsValue]] = []
    blob_chunks: dict[tuple[int, str], dict[int, bytes]] = {}
    blob_index: dict[tuple[int, str], tuple[int, int, int]] = {}
    pages = []
    for n in range(len(image) // PAGE_SIZE):
        page = image[n * PAGE_SIZE : (n + 1) * PAGE_SIZE]
        state, seq = struct.unpack_from("<II", page)
        if state == PAGE_EMPTY:
            continue
        if state not in (PAGE_ACTIVE, PAGE_FULL, PAGE_FREEING):
            raise NvsFormatError(f"page {n}: state {state:#010x} is not a valid page state")
        (hcrc,) = struct.unpack_from("<I", page, 28)
        if hcrc != _crc(page[4:28]):
            raise NvsFormatError(f"page {n}: header CRC mismatch")
        pages.append((seq, n, page))
    # newer pages (higher sequence numbers) win for keys written twice, as nvs_flash does
    for _seq, n, page in sorted(pages):
        _read_page(n, page, namespaces, items, blob_chunks, blob_index)

    out: dict[str, dict[str, NvsValue]] = {}
    for ns_index, key, value in items:
        if ns_index not in namespaces:
            raise NvsFormatError(f"key {key!r} is in namespace index {ns_index}, never declared")
        out.setdefault(namespaces[ns_index], {})[key] = value
    for (ns_index, key), (size, count, start) in blob_index.items():
        chunks = blob_chunks.get((ns_index, key), {})
        try:
            data = b"".join(chunks[start + i] for i in range(count))
        except KeyError as exc:
            raise NvsFormatError(f"blob {key!r}: chunk {exc} is missing") from exc
        if len(data) != size or ns_index not in namespaces:
            raise NvsFormatError(f"blob {key!r}: {len(data)} bytes in chunks, index says {size}")
        out.setdefault(namespaces[ns_index], {})[key] = NvsValue("blob", data)
    return out


def _read_page(
    n: int,
    page: bytes,
    namespaces: dict[int, str],
    items: list[tuple[int, str, NvsValue]],
    blob_chunks: dict[tuple[int, str], dict[int, bytes]],
    blob_index: dict[tuple[int, str], tuple[int, int, int]],
) -> None:
    bitmap = page[32:64]
    i = 0
    while i < ENTRIES_PER_PAGE:
        state = (bitmap[i // 4] >> ((i % 4) * 2)) & 3
        if state != ENTRY_WRITTEN:
            i += 1
            continue
        where = f"page {n} entry {i}"
        off = FIRST_ENTRY + i * ENTRY_SIZE
        entry = page[off : off + ENTRY_SIZE]
        ns_index, etype, span, chunk_index = entry[0], entry[1], entry[2], entry[3]
        (crc,) = struct.unpack_from("<I", entry, 4)
        if crc != _entry_crc(entry):
            raise NvsFormatError(f"{where}: entry CRC mismatch")
        if span < 1 or i + span > ENTRIES_PER_PAGE:
            raise NvsFormatError(f"{where}: span {span} runs past the page")
        key = _key(entry, where)
        data = entry[24:32]
        if etype in PRIMITIVES:
            name, fmt = PRIMITIVES[etype]
            (value,) = struct.unpack_from(fmt, data)
            if ns_index == 0:
                if etype != 0x01 or not 1 <= value <= 254:
                    raise NvsFormatError(f"{where}: namespace {key!r} has a bad index {value}")
                namespaces[value] = key
            else:
                items.append((ns_index, key, NvsValue(name, value)))
        elif etype in (SZ, BLOB, BLOB_DATA):
            size, _reserved, dcrc = struct.unpack_from("<HHI", data)
            payload_at = off + ENTRY_SIZE
            if size > (span - 1) * ENTRY_SIZE:
                raise NvsFormatError(f"{where}: size {size} does not fit in span {span}")
            payload = page[payload_at : payload_at + size]
            if _crc(payload) != dcrc:
                raise NvsFormatError(f"{where}: data CRC mismatch for key {key!r}")
            if etype == SZ:
                if not payload.endswith(b"\0"):
                    raise NvsFormatError(f"{where}: string {key!r} is not NUL-terminated")
                try:
                    text = payload[:-1].decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise NvsFormatError(f"{where}: string {key!r} is not UTF-8") from exc
                items.append((ns_index, key, NvsValue("string", text)))
            elif etype == BLOB:
                items.append((ns_index, key, NvsValue("blob", payload)))
            else:
                blob_chunks.setdefault((ns_index, key), {})[chunk_index] = payload
        elif etype == BLOB_IDX:
            size, count, start = struct.unpack_from("<IBB", data)
            blob_index[(ns_index, key)] = (size, count, start)
        else:
            raise NvsFormatError(f"{where}: unknown entry type {etype:#04x}")
        i += span
