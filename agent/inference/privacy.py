"""The privacy policy for the person group: who is in a capture, and what of it may leave.

People are found by the detector's own person results and by the privacy finders: face packages
(BlazeFace), body finders (OpenCV's HOG people detector, BlazePose's detector, which grows a found
face into a body). Under `blur` each person region is blurred over the person's silhouette from a
segmentation package (feathered), or over its whole box without one; a new JPEG (no EXIF) is
written from the full-resolution original, which never leaves the station.
"""

from __future__ import annotations

import importlib.metadata
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

from agent.inference import image as img
from agent.inference.decoders import Segmentation
from agent.inference.package import Detection, ModelPackage, PackageError, load_package
from agent.inference.settings import InferenceSection, resolve_package

POLICIES = ("blur", "drop", "keep")
FINDS = ("faces", "bodies", "both")
PRIVATE_GROUP = "person"
HOG = "opencv-hog"  # the built-in body finder's name in body_models
BLUR_MARGIN = 0.25  # face detectors box the face only; hair, ears and chin need covering too
BODY_MARGIN = 0.2  # body boxes cut off arms, hoods and (HOG's) heads: grow them, the mask trims
BODY_HEADROOM = 0.4  # and further up: a HOG box on a torso often stops below the head
MASK_CUT = 0.25  # mask scores from here up count as person (low: a missed ear is worse than a wall)
MASK_MIN_COVER = 0.2  # a person fills more of their region than this; a mask that marks less
# missed part of them (the model knows people by their faces): blur the whole box instead
HOG_SIDE = 300  # HOG's working size (longer side): people from about a third of the frame's height
HOG_PAD = 0.1  # grey border, so a person cut by the frame edge still fills a whole window

Box = tuple[float, float, float, float]  # normalised x, y, w, h
OPENCV_WHEELS = (
    "opencv-python-headless", "opencv-python",
    "opencv-contrib-python-headless", "opencv-contrib-python",
)  # fmt: skip

if TYPE_CHECKING:
    import cv2


def private_boxes(detections: Sequence[Detection]) -> list[Box | None]:
    """Boxes of every person-group result (a classifier's on its parent's box; None = frame)."""
    return [d.box for d in private(detections)]


def private(detections: Sequence[Detection]) -> list[Detection]:
    """Every person-group result (or result with a person-group classification)."""
    return [
        d
        for d in detections
        if d.group == PRIVATE_GROUP or any(c.group == PRIVATE_GROUP for c in d.children)
    ]


def upload_variant(policy: str, detections: Sequence[Detection]) -> str:
    """'original', 'blurred' or 'none': which image, if any, the uploader may send."""
    if policy not in POLICIES:
        raise ValueError(f"unknown person policy {policy!r}; one of {', '.join(POLICIES)}")
    if policy == "keep" or not private(detections):
        return "original"
    return "blurred" if policy == "blur" else "none"


# --- finders -------------------------------------------------------------------------------------


def opencv_version() -> str:
    """cv2.__version__ without importing OpenCV: its wheel's version less the build number."""
    for wheel in OPENCV_WHEELS:
        try:
            return ".".join(importlib.metadata.version(wheel).split(".")[:3])
        except importlib.metadata.PackageNotFoundError:
            continue
    import cv2  # not from a wheel (Debian's python3-opencv): only the module knows

    return str(cv2.__version__)


class HogPeople:
    """OpenCV's HOG + linear SVM pedestrian detector (Dalal & Triggs), from opencv-python-headless.

    Trained on upright, whole, walking people; its score is the SVM margin, not a probability.
    """

    name = "opencv-hog-people"

    def __init__(self, threshold: float) -> None:
        self.version = opencv_version()
        self.threshold = threshold
        self._hog: cv2.HOGDescriptor | None = None  # made at the first run

    def descriptor(self) -> cv2.HOGDescriptor:
        # OpenCV (~25 MiB resident) loads at the first picture, not at start-up: an idle station
        # with the default opencv-hog finder stays small
        if self._hog is None:
            import cv2

            hog = cv2.HOGDescriptor()
            hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))
            self._hog = hog
        return self._hog

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def draft_request(self, size: tuple[int, int]) -> tuple[int, int]:
        return img.draft_request(size, (HOG_SIDE, HOG_SIDE), letterbox=True)

    def run(self, picture: Image.Image) -> list[Detection]:
        hog = self.descriptor()
        import cv2  # loaded by descriptor(): a dictionary look-up now

        w, h = picture.size
        scale = HOG_SIDE / max(w, h)
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        grey = np.asarray(picture.convert("L").resize((sw, sh), Image.Resampling.BOX))
        pad = round(HOG_PAD * max(sw, sh))
        grey = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=128)
        if min(grey.shape) < 128:
            return []  # smaller than one detection window
        rects, weights = hog.detectMultiScale(
            grey, hitThreshold=min(0.0, self.threshold), winStride=(8, 8), padding=(8, 8),
            scale=1.05,
        )  # fmt: skip
        found = []
        for (x, y, rw, rh), score in zip(rects, np.ravel(weights), strict=True):
            if score < self.threshold:
                continue
            x0, y0 = max(0.0, float(x - pad) / sw), max(0.0, float(y - pad) / sh)
            x1, y1 = min(1.0, float(x - pad + rw) / sw), min(1.0, float(y - pad + rh) / sh)
            if x1 > x0 and y1 > y0:
                found.append(
                    Detection(
                        "person",
                        PRIVATE_GROUP,
                        float(score),
                        (x0, y0, x1 - x0, y1 - y0),
                        self.name,
                        self.version,
                    )
                )
        return found


@dataclass(frozen=True)
class Finder:
    """A privacy finder: a model package or HOG, with the threshold its results must pass."""

    kind: str  # "face" | "body"
    model: ModelPackage | HogPeople
    threshold: float

    @property
    def id(self) -> str:
        m = self.model
        return m.id if isinstance(m, HogPeople) else m.card.id

    def run(self, picture: Image.Image) -> list[Detection]:
        found = self.model.run(picture)
        return [d for d in found if d.score >= self.threshold and d.group == PRIVATE_GROUP]


class PersonFinders:
    """The privacy stage: the finders the config names and the optional person mask."""

    def __init__(self, finders: Sequence[Finder], mask: ModelPackage | None = None) -> None:
        if mask is not None and not isinstance(mask.decoder, Segmentation):
            raise ValueError(f"person mask {mask.card.id} is a {mask.card.task} model, not segment")
        self.finders = list(finders)
        self.mask = mask

    @property
    def models(self) -> list[str]:
        return [f.id for f in self.finders] + ([self.mask.card.id] if self.mask else [])

    def find(
        self,
        jpeg: bytes,
        *,
        already: Sequence[str] = (),
        max_pixels: int = img.MAX_PIXELS,
        min_side: int = img.MIN_SIDE,
    ) -> list[Detection]:
        """People the finders see, each a person-group Detection naming its finder and score.

        `already`: finders (name@version) whose results the caller has (the station's detector).
        """
        todo = [f for f in self.finders if f.id not in already]
        if not todo:
            return []
        header = img.open_jpeg(jpeg, max_pixels=max_pixels, min_side=min_side)
        requests = [f.model.draft_request(header.size) for f in todo]
        # one decode for all finders, as small as the most demanding one allows
        picture = img.decode(header, (max(r[0] for r in requests), max(r[1] for r in requests)))
        found: list[Detection] = []
        for f in todo:
            found.extend(f.run(picture))
        return found


# --- blurring ------------------------------------------------------------------------------------


def is_face(d: Detection) -> bool:
    return "face" in d.label.lower()


def blur_people(
    jpeg: bytes,
    people: Sequence[Detection],
    *,
    mask: ModelPackage | None = None,
    quality: int = 90,
    max_pixels: int = img.MAX_PIXELS,
) -> bytes:
    """A new JPEG with every person-group result blurred beyond recognition.

    Faces: the box grown by BLUR_MARGIN, whole. Bodies: the box grown by BODY_MARGIN (and
    BODY_HEADROOM above), over the person's silhouette from `mask` (feathered) when it finds one there, else the whole box.
    A result without a box blurs the whole frame.
    """
    picture, (w, h) = img.decode_jpeg(jpeg, max_pixels=max_pixels)
    for d in private(people):
        face = is_face(d)
        if face:
            rect = _rect(d.box, w, h, BLUR_MARGIN)
        else:
            rect = _rect(d.box, w, h, BODY_MARGIN, top=BODY_HEADROOM)
        if rect is None:
            continue
        region = picture.crop(rect)
        alpha = None if face or mask is None or d.box is None else person_alpha(mask, region)
        picture.paste(_blurred(region, alpha), rect[:2])
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def blur_jpeg(
    jpeg: bytes,
    boxes: Sequence[Box | None],
    *,
    margin: float = BLUR_MARGIN,
    quality: int = 90,
    max_pixels: int = img.MAX_PIXELS,
) -> bytes:
    """A new JPEG with each normalised (x, y, w, h) box, grown by `margin`, blurred whole;
    a None box blurs the whole frame."""
    picture, (w, h) = img.decode_jpeg(jpeg, max_pixels=max_pixels)
    for box in boxes:
        rect = _rect(box, w, h, margin)
        if rect is not None:
            picture.paste(_blurred(picture.crop(rect), None), rect[:2])
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def person_alpha(mask: ModelPackage, region: Image.Image) -> np.ndarray | None:
    """Blur weight 0..1 per pixel of `region`: the person's silhouette, grown and feathered;
    None when the mask finds (almost) no person there."""
    decoder = mask.decoder
    assert isinstance(decoder, Segmentation)
    tensor, box = mask.preprocess(region)
    scores = decoder.mask(mask.invoke(tensor))
    mh, mw = scores.shape
    # the letterbox's bars are not the region: keep only the part the region fills
    x0, y0 = round(box.x0 * mw), round(box.y0 * mh)
    x1, y1 = round((box.x0 + box.sx) * mw), round((box.y0 + box.sy) * mh)
    scores = scores[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]
    on = np.clip((scores - MASK_CUT) / (1 - MASK_CUT) * 4, 0, 1)
    if float((on > 0.5).mean()) < MASK_MIN_COVER:
        return None
    side = max(region.size)
    grown = (
        Image.fromarray((on * 255).astype(np.uint8))
        .resize(region.size, Image.Resampling.BILINEAR)
        .filter(ImageFilter.MaxFilter(_odd(side // 25)))  # hair and fingers the mask trims
        .filter(ImageFilter.GaussianBlur(max(2, side // 60)))  # feathered edge
    )
    return np.asarray(grown, np.float32) / 255


def _odd(n: int) -> int:
    return max(3, n | 1)


def _rect(
    box: Box | None, w: int, h: int, margin: float, *, top: float | None = None
) -> tuple[int, int, int, int] | None:
    """Pixel (left, top, right, bottom) of a normalised box grown by `margin` of its size on
    every side (`top` instead above it), clipped to the frame."""
    if box is None:
        return (0, 0, w, h)
    x, y, bw, bh = box
    left = max(0, int((x - bw * margin) * w))
    top_ = max(0, int((y - bh * (margin if top is None else top)) * h))
    right = min(w, round((x + bw * (1 + margin)) * w))
    bottom = min(h, round((y + bh * (1 + margin)) * h))
    if right <= left or bottom <= top_:
        return None
    return (left, top_, right, bottom)


def _blurred(region: Image.Image, alpha: np.ndarray | None) -> Image.Image:
    """Pixelate then smooth (no detail at the scale of facial features survives), blended over
    the original by `alpha` (None: everywhere)."""
    rw, rh = region.size
    cells = max(1, max(rw, rh) // 12)
    small = region.resize((max(1, rw // cells), max(1, rh // cells)), Image.Resampling.BILINEAR)
    blurred = small.resize(region.size, Image.Resampling.NEAREST).filter(
        ImageFilter.GaussianBlur(radius=max(2, cells // 2))
    )
    if alpha is None:
        return blurred
    a = alpha[..., None]
    mixed = np.asarray(blurred, np.float32) * a + np.asarray(region, np.float32) * (1 - a)
    return Image.fromarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8))


# --- from the config -----------------------------------------------------------------------------


def load_finders(
    section: InferenceSection, models_dir: Path, *, threads: int = 1, xnnpack: bool = True
) -> PersonFinders | None:
    """The privacy stage the [inference] section asks for (None: no finder and no mask).

    Raises PackageError when a named package cannot be loaded: captures then wait rather than
    leave unchecked.
    """

    def load(ref: str) -> ModelPackage:
        return load_package(resolve_package(ref, models_dir), threads=threads, xnnpack=xnnpack)

    finders: list[Finder] = []
    if section.person_finders in ("faces", "both"):
        finders += [
            Finder("face", load(ref), section.face_threshold) for ref in section.face_models
        ]
    if section.person_finders in ("bodies", "both"):
        for ref in section.body_models:
            if ref == HOG:
                finders.append(Finder("body", HogPeople(section.hog_threshold), 0.0))
            else:
                finders.append(Finder("body", load(ref), section.body_threshold))
    mask = load(section.person_mask) if section.person_mask else None
    if mask is not None and not isinstance(mask.decoder, Segmentation):
        raise PackageError(
            mask.card.id, f"person_mask must be a segment model, not {mask.card.task}"
        )
    if not finders and mask is None:
        return None
    return PersonFinders(finders, mask)
