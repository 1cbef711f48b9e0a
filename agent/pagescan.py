"""Read table rows straight from a SQLite file's leaf pages, without trusting its B-tree.

When an interior page of a table is damaged, SQLite cannot reach any row below it, even though
the leaf pages holding those rows are whole. Salvage then reads every page of the file, keeps the
table leaf pages, and decodes their cells per the documented file format
(https://www.sqlite.org/fileformat2.html): our own code because Python's sqlite3 does not expose
SQLite's recovery API. Every length and offset is checked; a cell that does not decode is skipped.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

_TABLE_LEAF = 0x0D
Value = int | float | str | bytes | None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A SQLite varint at `pos`: (value, position after it)."""
    value = 0
    for i in range(9):
        if pos + i >= len(buf):
            raise ValueError("varint runs past the end")
        byte = buf[pos + i]
        if i == 8:
            return (value << 8) | byte, pos + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    raise AssertionError("unreachable")


def _record(payload: bytes) -> list[Value]:
    """Decode one record (header of serial types, then the values)."""
    header_size, pos = _varint(payload, 0)
    if not 0 < header_size <= len(payload):
        raise ValueError("bad record header size")
    types = []
    while pos < header_size:
        serial, pos = _varint(payload, pos)
        types.append(serial)
    values: list[Value] = []
    pos = header_size
    for serial in types:
        if serial == 0:
            values.append(None)
        elif 1 <= serial <= 6:
            size = (1, 2, 3, 4, 6, 8)[serial - 1]
            if pos + size > len(payload):
                raise ValueError("integer runs past the record")
            values.append(int.from_bytes(payload[pos : pos + size], "big", signed=True))
            pos += size
        elif serial == 7:
            if pos + 8 > len(payload):
                raise ValueError("float runs past the record")
            values.append(struct.unpack(">d", payload[pos : pos + 8])[0])
            pos += 8
        elif serial in (8, 9):
            values.append(serial - 8)
        elif serial >= 12:
            size = (serial - 12) // 2
            if pos + size > len(payload):
                raise ValueError("text or blob runs past the record")
            raw = payload[pos : pos + size]
            values.append(bytes(raw) if serial % 2 == 0 else raw.decode("utf-8"))
            pos += size
        else:
            raise ValueError(f"reserved serial type {serial}")
    return values


class PageFile:
    """A SQLite database file read as pages."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        size = struct.unpack(">H", data[16:18])[0] if len(data) >= 100 else 4096
        self.page_size = 65536 if size == 1 else size
        if self.page_size < 512 or self.page_size & (self.page_size - 1):
            self.page_size = 4096  # header damaged: the buffer's page size
        reserved = data[20] if len(data) >= 100 else 0
        self.usable = self.page_size - reserved
        self.pages = len(data) // self.page_size

    @classmethod
    def open(cls, path: Path) -> PageFile:
        return cls(path.read_bytes())

    def page(self, number: int) -> bytes:
        start = (number - 1) * self.page_size
        return self.data[start : start + self.page_size]

    def rows(self) -> Iterator[tuple[int, list[Value]]]:
        """(rowid, values) of every cell on every table leaf page that decodes."""
        for number in range(1, self.pages + 1):
            page = self.page(number)
            base = 100 if number == 1 else 0
            if len(page) < base + 8 or page[base] != _TABLE_LEAF:
                continue
            cells = struct.unpack(">H", page[base + 3 : base + 5])[0]
            for i in range(cells):
                at = base + 8 + 2 * i
                if at + 2 > len(page):
                    break
                pointer = struct.unpack(">H", page[at : at + 2])[0]
                try:
                    yield self._cell(page, pointer)
                except (ValueError, UnicodeDecodeError, struct.error, IndexError):
                    continue

    def _cell(self, page: bytes, pointer: int) -> tuple[int, list[Value]]:
        if not 8 <= pointer < self.usable:
            raise ValueError("cell pointer outside the page")
        size, pos = _varint(page, pointer)
        rowid, pos = _varint(page, pos)
        u = self.usable
        most = u - 35
        if size <= most:
            local = size
        else:
            least = (u - 12) * 32 // 255 - 23
            k = least + (size - least) % (u - 4)
            local = k if k <= most else least
        if pos + local > len(page):
            raise ValueError("cell runs past the page")
        payload = bytearray(page[pos : pos + local])
        if local < size:
            if pos + local + 4 > len(page):
                raise ValueError("overflow pointer past the page")
            nxt = struct.unpack(">I", page[pos + local : pos + local + 4])[0]
            seen = 0
            while len(payload) < size:
                seen += 1
                if not 1 <= nxt <= self.pages or seen > self.pages:
                    raise ValueError("broken overflow chain")
                over = self.page(nxt)
                nxt = struct.unpack(">I", over[:4])[0]
                payload += over[4 : min(u, 4 + size - len(payload))]
        return rowid, _record(bytes(payload))
