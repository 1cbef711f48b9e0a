"""One batch request: which variant of each capture goes, its manifest item and the multipart body."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.store import Store
from agent.upload.manifest import MANIFEST_PART, BatchManifest, ManifestItem, Variant

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One capture in one batch."""

    capture_id: str
    variant: Variant
    final_variant: Variant  # once the cloud holds this (or better) the capture is uploaded
    image: bytes | None
    manifest: ManifestItem

    @property
    def nbytes(self) -> int:
        return len(self.image) if self.image is not None else 0


class MissingImage(Exception):
    """The variant the privacy policy allows is not in the buffer; the capture cannot go."""


class RottedImage(MissingImage):
    """The stored original's bytes no longer match the sha256 recorded when it was received."""


def _sound(row: sqlite3.Row, image: bytes) -> bytes:
    """The original, if it is still the bytes the unit sent; found here, not by the cloud."""
    digest = hashlib.sha256(image).hexdigest()
    if digest != row["sha256"]:
        raise RottedImage(
            f"image bytes rotted in the buffer: sha256 {digest}, recorded {row['sha256']}"
        )
    return image


class ImageReader:
    """Image bytes for a batch's candidates, read a few captures per query, in their order."""

    chunk = 8

    def __init__(self, store: Store, ids: Sequence[str]) -> None:
        self.store = store
        self.ids = list(ids)
        self.pos = {cid: n for n, cid in enumerate(self.ids)}
        self.cache: dict[tuple[str, str], bytes] = {}
        self.loaded = 0  # ids[:loaded] are in the cache (or have no such image)

    def get(self, capture_id: str, variant: str) -> bytes | None:
        n = self.pos.get(capture_id)
        if n is None:
            return self.store.read_image(capture_id, variant)
        if n >= self.loaded:
            self._load(n)
        return self.cache.pop((capture_id, variant), None)

    def _load(self, upto: int) -> None:
        # drop what was passed over, then read the next chunk (memory stays ~ one batch)
        for cid in self.ids[: self.loaded]:
            for v in ("original", "blurred", "thumbnail"):
                self.cache.pop((cid, v), None)
        start, end = self.loaded, max(upto + 1, self.loaded + self.chunk)
        self.cache.update(self.store.read_images(self.ids[start:end]))
        self.loaded = min(len(self.ids), end)


def final_variant(row: sqlite3.Row, empty_policy: str) -> Variant:
    """What the cloud should end up holding: privacy first, then the empty-frame policy."""
    if row["upload_variant"] == "none":
        return "none"
    if row["empty"] == 1 and empty_policy == "skip":
        return "none"
    if row["empty"] == 1 and empty_policy == "thumbnail":
        return "thumbnail"
    return "blurred" if row["upload_variant"] == "blurred" else "full"


def make_thumbnail(jpeg: bytes, px: int) -> bytes:
    """A small JPEG: decoded with DCT scaling (draft), so a 5 MP frame costs little CPU."""
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as decoded:
        decoded.draft("RGB", (px, px))
        img = decoded.convert("RGB")
        img.thumbnail((px, px))
        out = io.BytesIO()
        img.save(out, "JPEG", quality=70, optimize=True)
    return out.getvalue()


def build_item(
    row: sqlite3.Row,
    detections: list[dict[str, Any]],
    read_image: Callable[[str, str], bytes | None],
    *,
    empty_policy: str,
    thumbnails_first: bool,
    thumbnail_px: int,
) -> Item:
    """The next variant of this capture to send, with its bytes and manifest item."""
    final = final_variant(row, empty_policy)
    variant: Variant = final
    if thumbnails_first and final in ("full", "blurred") and row["phase"] == 0:
        variant = "thumbnail"
    image = None
    source = "blurred" if row["upload_variant"] == "blurred" else "original"
    if variant in ("full", "blurred"):
        image = read_image(row["id"], source)
        if image is None:
            raise MissingImage(f"capture {row['id']} has no {source} image in the buffer")
        if source == "original":
            image = _sound(row, image)
    elif variant == "thumbnail":
        image = read_image(row["id"], "thumbnail") if source == "original" else None
        if image is None:
            base = read_image(row["id"], source)
            if base is None:
                raise MissingImage(f"capture {row['id']} has no {source} image in the buffer")
            if source == "original":
                base = _sound(row, base)
            try:
                image = make_thumbnail(base, thumbnail_px)
            except Exception as exc:  # a JPEG Pillow cannot decode still goes, whole
                log.warning("capture %s: no thumbnail (%s); sending it whole", row["id"], exc)
                variant, image = ("blurred" if source == "blurred" else "full"), base
    if variant in ("full",) and image is not None:
        image_sha = row["sha256"]  # the original's hash is already known
    else:
        image_sha = hashlib.sha256(image).hexdigest() if image is not None else None
    empty = None if row["empty"] is None else bool(row["empty"])
    manifest: ManifestItem = {
        "capture_id": row["id"],
        "unit_id": row["unit_id"],
        "path": row["path"],
        "sha256": row["sha256"],
        "size": row["size"],
        "received_at": row["received_at"],
        "captured_at": row["captured_at"],
        "unit_time": row["unit_time"],
        "unit_time_kind": row["unit_time_kind"],
        "trigger": row["trigger"],
        "variant": variant,
        "image_part": None,
        "image_sha256": image_sha,
        "empty": empty,
        "detections": detections,
        "meta": json.loads(row["meta"] or "{}"),
    }
    return Item(row["id"], variant, final, image, manifest)


def encode(station_id: str, items: Sequence[Item]) -> tuple[bytes, str]:
    """The multipart/form-data body: the manifest part first, then one part per image.

    Own encoder (a few lines): one join of the parts, no per-part copies, exact size known.
    """
    boundary = "wildcam-" + os.urandom(12).hex()
    parts: list[bytes] = []
    images: list[tuple[str, bytes]] = []
    for n, item in enumerate(items):
        if item.image is not None:
            name = f"i{n}"
            item.manifest["image_part"] = name
            images.append((name, item.image))
        else:
            item.manifest["image_part"] = None
    body: BatchManifest = {"station_id": station_id, "items": [i.manifest for i in items]}
    manifest = json.dumps(body, separators=(",", ":")).encode()
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{MANIFEST_PART}"\r\n'
        "Content-Type: application/json\r\n\r\n".encode()
    )
    parts.append(manifest)
    for name, data in images:
        parts.append(
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{name}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
        )
        parts.append(data)
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
