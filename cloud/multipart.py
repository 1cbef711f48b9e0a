"""Multipart/form-data parsing into raw byte parts.

Starlette's form parser decodes parts without a filename as text and caps them at 1 MiB; images
must stay bytes and the limits are ours, so we drive python-multipart's parser directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data (400)."""


class PartTooLarge(ValueError):
    """One part is over the per-item limit (413)."""


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise MultipartError(f"content type {content_type!r}: expected multipart/form-data")
    boundary = options.get(b"boundary")
    if not boundary:
        raise MultipartError("multipart/form-data without a boundary")
    return boundary


class _Collector:
    """python-multipart callbacks that gather parts into `parts`, enforcing the limits."""

    def __init__(self, max_part_bytes: int, max_parts: int) -> None:
        self.max_part_bytes = max_part_bytes
        self.max_parts = max_parts
        self.parts: dict[str, Part] = {}
        self.ended = False
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._part: Part | None = None

    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def on_headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise MultipartError("part without Content-Disposition")
        _, options = parse_options_header(disposition)
        name = options.get(b"name")
        if not name:
            raise MultipartError("part without a name")
        text = name.decode("utf-8", "replace")
        if text in self.parts:
            raise MultipartError(f"part {text!r} appears twice")
        if len(self.parts) >= self.max_parts:
            raise PartTooLarge(f"more than {self.max_parts} parts")
        filename = options.get(b"filename")
        ctype = self._headers.get(b"content-type")
        self._part = Part(
            text,
            filename.decode("utf-8", "replace") if filename is not None else None,
            ctype.decode("latin-1") if ctype else None,
        )
        self.parts[text] = self._part

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        assert part is not None  # the parser calls on_headers_finished first
        part.size += end - start
        if part.size > self.max_part_bytes:
            raise PartTooLarge(
                f"part {part.name!r} is over the per-item limit of {self.max_part_bytes} bytes"
            )
        part.chunks.append(data[start:end])

    def on_end(self) -> None:
        self.ended = True


def parse_parts(
    content_type: str, body: bytes, max_part_bytes: int, max_parts: int
) -> dict[str, Part]:
    """Split `body` into parts by name; raise MultipartError, or PartTooLarge naming the part."""
    boundary = boundary_of(content_type)
    collector = _Collector(max_part_bytes, max_parts)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": collector.on_part_begin,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
            "on_part_data": collector.on_part_data,
            "on_end": collector.on_end,
        },
        max_header_count=16,
    )
    try:
        parser.write(body)
        parser.finalize()
    except (MultipartError, PartTooLarge):
        raise
    except Exception as exc:  # python-multipart raises several types for malformed input
        raise MultipartError(f"malformed multipart body: {exc}") from exc
    if not collector.ended:
        # A cut-off upload must not be taken for a complete one.
        raise MultipartError("multipart body ends before its closing boundary")
    return collector.parts
