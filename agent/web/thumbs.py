"""Thumbnails for the page: made on the station from the variant the privacy policy allows, a few
KB each, kept in a bounded memory cache (the browser caches them too: their URLs never change)."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable

from PIL import Image, UnidentifiedImageError

THUMB_PX = 240
THUMB_QUALITY = 60


def make_thumbnail(jpeg: bytes, px: int = THUMB_PX) -> bytes:
    """A small JPEG of `jpeg` whose longest side is `px` (DCT scaling: the decode is cheap)."""
    with Image.open(io.BytesIO(jpeg)) as img:
        img.draft("RGB", (px, px))  # decode at 1/2, 1/4 or 1/8 scale straight from the DCT
        small = img.convert("RGB")
        small.thumbnail((px, px))
        out = io.BytesIO()
        small.save(out, "JPEG", quality=THUMB_QUALITY, optimize=True)
    return out.getvalue()


class Thumbnails:
    """(capture id, variant) -> thumbnail bytes, the newest `capacity` kept."""

    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, capture_id: str, variant: str, read: Callable[[], bytes | None]) -> bytes | None:
        """The thumbnail, made from `read()` on a miss (None when there is no usable image)."""
        key = (capture_id, variant)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        source = read()
        if source is None:
            return None
        try:
            thumb = make_thumbnail(source)
        except (UnidentifiedImageError, OSError, ValueError):
            return None
        with self._lock:
            self._cache[key] = thumb
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return thumb
