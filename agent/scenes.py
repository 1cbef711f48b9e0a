"""Real JPEG files of synthetic field scenes, for the demo and the tests (no downloads needed)."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw, ImageFilter


def scene_jpeg(seed: int, size: tuple[int, int] = (800, 600), quality: int = 85) -> bytes:
    """A camera-trap-like frame: sky, ground, trees, an animal-ish blob and sensor noise."""
    rnd = random.Random(seed)
    w, h = size
    img = Image.new("RGB", size, (110 + rnd.randint(-20, 20), 150, 200))
    draw = ImageDraw.Draw(img)
    horizon = int(h * rnd.uniform(0.35, 0.55))
    draw.rectangle([0, horizon, w, h], fill=(70 + rnd.randint(-15, 15), 95, 45))
    for _ in range(rnd.randint(3, 8)):
        x = rnd.randint(0, w)
        trunk = rnd.randint(w // 80, w // 40)
        top = rnd.randint(h // 10, horizon)
        draw.rectangle([x, top, x + trunk, horizon + rnd.randint(0, h // 8)], fill=(80, 60, 40))
        r = rnd.randint(w // 20, w // 8)
        draw.ellipse(
            [x - r, top - r, x + r + trunk, top + r], fill=(30, 90 + rnd.randint(0, 40), 30)
        )
    if seed % 3:  # two in three frames hold an "animal"; the rest are PIR false triggers
        ax, ay = rnd.randint(w // 8, w * 3 // 4), rnd.randint(horizon, h * 7 // 8)
        aw, ah = rnd.randint(w // 10, w // 5), rnd.randint(h // 12, h // 6)
        draw.ellipse([ax, ay, ax + aw, ay + ah], fill=(120, 85, 50))
        draw.ellipse(
            [ax + aw - aw // 4, ay - ah // 3, ax + aw + aw // 6, ay + ah // 3], fill=(110, 80, 45)
        )
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    noise = Image.effect_noise(size, 24).convert("RGB")
    img = Image.blend(img, noise, 0.12)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()
