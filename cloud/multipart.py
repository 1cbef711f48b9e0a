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


def parse_parts(
    content_type: str, body: bytes, max_part_bytes: int, max_parts: int
) -> dict[str, Part]:
    """Split `body` into parts by name; raise MultipartError, or PartTooLarge naming the part."""
    boundary = boundary_of(content_type)
    parts: dict[str, Part] = {}
    state: dict[str, object] = {
        "field": b"",
        "value": b"",
        "headers": {},
        "part": None,
        "end": False,
    }

    def on_part_begin() -> None:
        state["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] = state["field"] + data[start:end]  # type: ignore[operator]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] = state["value"] + data[start:end]  # type: ignore[operator]

    def on_header_end() -> None:
        headers = state["headers"]
        assert isinstance(headers, dict)
        headers[bytes(state["field"]).lower()] = bytes(state["value"])  # type: ignore[arg-type]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        headers = state["headers"]
        assert isinstance(headers, dict)
        disposition = headers.get(b"content-disposition")
        if disposition is None:
            raise MultipartError("part without Content-Disposition")
        _, options = parse_options_header(disposition)
        name = options.get(b"name")
        if not name:
            raise MultipartError("part without a name")
        text = name.decode("utf-8", "replace")
        if text in parts:
            raise MultipartError(f"part {text!r} appears twice")
        if len(parts) >= max_parts:
            raise PartTooLarge(f"more than {max_parts} parts")
        filename = options.get(b"filename")
        ctype = headers.get(b"content-type")
        part = Part(
            text,
            filename.decode("utf-8", "replace") if filename is not None else None,
            ctype.decode("latin-1") if ctype else None,
        )
        parts[text] = part
        state["part"] = part

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = state["part"]
        assert isinstance(part, Part)
        part.size += end - start
        if part.size > max_part_bytes:
            raise PartTooLarge(
                f"part {part.name!r} is over the per-item limit of {max_part_bytes} bytes"
            )
        part.chunks.append(data[start:end])

    def on_end() -> None:
        state["end"] = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_end": on_end,
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
    if not state["end"]:
        # A cut-off upload must not be taken for a complete one.
        raise MultipartError("multipart body ends before its closing boundary")
    return parts
