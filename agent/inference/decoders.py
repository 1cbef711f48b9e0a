"""Output decoders, one per model family, behind one interface chosen by the card's `task`.

Each decoder checks the interpreter's output tensors against the card when a package is loaded
(so a card that contradicts the model is refused before it is activated), then turns the raw
(dequantised) outputs of one invoke into `Raw` results: class index, score and a box in
input-normalised (x0, y0, x1, y1), or no box for a whole-frame classification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

TASKS = ("classify", "detect.ssd_postprocess", "detect.yolo", "detect.anchor_ssd")


class DecoderError(ValueError):
    """The model's tensors do not match what the card says."""


@dataclass(frozen=True)
class Raw:
    cls: int
    score: float
    box: tuple[float, float, float, float] | None  # input-normalised x0, y0, x1, y1


class Decoder(Protocol):
    def check(self, outputs: list[dict[str, Any]]) -> None:
        """Raise DecoderError when the output tensors contradict the card."""

    def decode(self, outputs: list[np.ndarray]) -> list[Raw]:
        """Raw results above the card's thresholds, after NMS where the family needs it."""


@dataclass(frozen=True)
class Settings:
    """What every decoder needs from the card."""

    labels: tuple[str, ...]
    thresholds: np.ndarray  # per class
    nms_iou: float
    max_detections: int
    input_size: tuple[int, int]  # (width, height)
    options: dict[str, Any]


def make_decoder(task: str, settings: Settings) -> Decoder:
    try:
        cls = _FAMILIES[task]
    except KeyError:
        raise DecoderError(f"unknown task {task!r}; known: {', '.join(TASKS)}") from None
    return cls(settings)


# --- helpers -------------------------------------------------------------------------------------


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


def _activate(x: np.ndarray, name: str) -> np.ndarray:
    if name == "softmax":
        return softmax(x)
    if name == "sigmoid":
        return sigmoid(x)
    return x


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box against an [N, 4] array."""
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.maximum(ix1 - ix0, 0) * np.maximum(iy1 - iy0, 0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou: float,
    limit: int,
    *,
    weighted: bool = False,
) -> list[tuple[int, float, np.ndarray]]:
    """Greedy per-class NMS: [(class, score, box)], best first.

    `weighted` blends each kept box with the boxes it suppresses, by score (MediaPipe's way for
    BlazeFace, which fires on several neighbouring anchors per face).
    """
    if len(scores) == 1:
        return [(int(classes[0]), float(scores[0]), boxes[0])]
    order = np.argsort(-scores, kind="stable")
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    alive = np.ones(len(scores), dtype=bool)
    kept: list[tuple[int, float, np.ndarray]] = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        same = alive & (classes == classes[i])
        overlap = same & (iou_one_to_many(boxes[i], boxes) > iou)
        overlap[i] = True
        box = boxes[i]
        if weighted:
            w = scores[overlap]
            box = (boxes[overlap] * w[:, None]).sum(axis=0) / w.sum()
        kept.append((int(classes[i]), float(scores[i]), box))
        alive &= ~overlap
        if len(kept) >= limit:
            break
    return kept


def _valid(boxes: np.ndarray) -> np.ndarray:
    return (
        np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    )


# --- families ------------------------------------------------------------------------------------


class Classification:
    """One score per label: softmax or logits (options.activation), float or quantised tensors."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.activation = s.options.get("activation", "none")
        self.top_k = int(s.options.get("top_k", 1))

    def check(self, outputs: list[dict[str, Any]]) -> None:
        if len(outputs) != 1:
            raise DecoderError(f"a classifier has one output tensor, this model has {len(outputs)}")
        shape = list(outputs[0]["shape"])
        if int(np.prod(shape)) != len(self.s.labels) or shape[-1] != len(self.s.labels):
            raise DecoderError(
                f"output {outputs[0]['name']!r} has shape {shape}, but the card lists "
                f"{len(self.s.labels)} labels"
            )

    def decode(self, outputs: list[np.ndarray]) -> list[Raw]:
        scores = _activate(outputs[0].reshape(-1).astype(np.float32), self.activation)
        out = []
        for cls in np.argsort(-scores, kind="stable")[: self.top_k]:
            if scores[cls] >= self.s.thresholds[cls]:
                out.append(Raw(int(cls), float(scores[cls]), None))
        return out


class SsdPostprocess:
    """SSD with the TFLite_Detection_PostProcess op: boxes, classes, scores, count."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.label_offset = int(s.options.get("label_offset", 0))
        self.order: list[int] = [0, 1, 2, 3]

    def check(self, outputs: list[dict[str, Any]]) -> None:
        if len(outputs) != 4:
            raise DecoderError(
                "TFLite_Detection_PostProcess has 4 outputs (boxes, classes, scores, count); "
                f"this model has {len(outputs)}"
            )
        shapes = [list(o["shape"]) for o in outputs]
        boxes = [i for i, sh in enumerate(shapes) if len(sh) == 3 and sh[-1] == 4]
        count = [i for i, sh in enumerate(shapes) if int(np.prod(sh)) == 1]
        rest = [i for i in range(4) if i not in boxes + count]
        if len(boxes) != 1 or len(count) != 1 or len(rest) != 2:
            raise DecoderError(
                f"outputs {shapes} are not boxes [1,N,4], classes, scores, count [1]"
            )
        names = [outputs[i]["name"].lower() for i in rest]
        if "score" in names[0] and "class" in names[1]:
            rest.reverse()  # some exporters emit scores before classes
        self.order = [boxes[0], rest[0], rest[1], count[0]]
        classes_in = self.s.options.get("num_classes")
        if classes_in is not None and int(classes_in) != len(self.s.labels):
            raise DecoderError(
                f"the model has {classes_in} classes, but the card lists {len(self.s.labels)} labels"
            )

    def decode(self, outputs: list[np.ndarray]) -> list[Raw]:
        boxes, classes, scores, count = (outputs[i] for i in self.order)
        n = int(np.clip(count.reshape(-1)[0], 0, boxes.shape[1]))
        out = []
        for i in range(n):
            cls = int(classes[0, i]) + self.label_offset
            score = float(scores[0, i])
            if not 0 <= cls < len(self.s.labels) or score < self.s.thresholds[cls]:
                continue
            y0, x0, y1, x1 = (float(v) for v in boxes[0, i])
            if x1 > x0 and y1 > y0:
                out.append(Raw(cls, score, (x0, y0, x1, y1)))
        return out[: self.s.max_detections]


class Yolo:
    """Raw YOLO heads: [1, 4+C, N] (v8 style, no objectness) or [1, N, 5+C] (v5 style).

    options.layout: "channels_first" ([1, 4+C(+1), N]), "boxes_last" ([1, N, 4+C(+1)]) or
    "auto"; options.objectness: true/false (auto from the width when absent);
    options.coords: "pixels" (of the model input) or "normalised"; options.activation on scores.
    """

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.layout = s.options.get("layout", "auto")
        self.objectness = s.options.get("objectness")
        self.coords = s.options.get("coords", "pixels")
        self.activation = s.options.get("activation", "none")

    def check(self, outputs: list[dict[str, Any]]) -> None:
        if len(outputs) != 1:
            raise DecoderError(f"a YOLO head has one output tensor, this model has {len(outputs)}")
        shape = list(outputs[0]["shape"])
        c = len(self.s.labels)
        if len(shape) != 3 or shape[0] != 1:
            raise DecoderError(f"YOLO output {shape} is not [1, 4+C, N] or [1, N, 5+C]")
        widths = {True: 5 + c, False: 4 + c}
        allowed = (
            [widths[self.objectness]] if self.objectness is not None else list(widths.values())
        )
        layout = self.layout
        if layout == "auto":
            layout = (
                "channels_first"
                if shape[1] in allowed and shape[2] not in allowed
                else "boxes_last"
            )
        width = shape[1] if layout == "channels_first" else shape[2]
        if width not in allowed:
            raise DecoderError(
                f"YOLO output {shape} ({layout}) has {width} values per box, but the card's "
                f"{c} labels need {' or '.join(map(str, allowed))}"
            )
        self.layout = layout
        self.objectness = width == 5 + c

    def decode(self, outputs: list[np.ndarray]) -> list[Raw]:
        head = outputs[0][0]
        if self.layout == "channels_first":
            head = head.T
        head = head.astype(np.float32, copy=False)
        if self.objectness:
            scores = _activate(head[:, 5:], self.activation) * _activate(
                head[:, 4:5], self.activation
            )
        else:
            scores = _activate(head[:, 4:], self.activation)
        cls = np.argmax(scores, axis=1)
        best = scores[np.arange(len(cls)), cls]
        keep = best >= self.s.thresholds[cls]
        if not keep.any():
            return []
        xywh, cls, best = head[keep, :4], cls[keep], best[keep]
        if self.coords == "pixels":
            w, h = self.s.input_size
            xywh = xywh / np.array([w, h, w, h], dtype=np.float32)
        boxes = np.concatenate(
            [xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1
        )
        ok = _valid(boxes)
        kept = nms(boxes[ok], best[ok], cls[ok], self.s.nms_iou, self.s.max_detections)
        return [Raw(c, s, tuple(float(v) for v in b)) for c, s, b in kept]


def ssd_anchors(
    width: int,
    height: int,
    strides: list[int],
    offset: float = 0.5,
    interpolated_scale_aspect_ratio: float = 1.0,
    aspect_ratios: int = 1,
) -> np.ndarray:
    """Anchor centres [N, 2] as MediaPipe's SsdAnchorsCalculator makes them (fixed anchor size).

    Consecutive layers with the same stride share one feature map; each cell gets one anchor
    per aspect ratio per layer, plus one for the interpolated scale when it is set.
    """
    out = []
    i = 0
    while i < len(strides):
        repeats = 0
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            repeats += aspect_ratios + (1 if interpolated_scale_aspect_ratio > 0 else 0)
            j += 1
        fh, fw = -(-height // strides[i]), -(-width // strides[i])
        ys, xs = np.mgrid[0:fh, 0:fw]
        centres = np.stack([(xs.ravel() + offset) / fw, (ys.ravel() + offset) / fh], axis=1)
        out.append(np.repeat(centres, repeats, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


class AnchorSsd:
    """Raw SSD heads with generated anchors (MediaPipe BlazeFace): regressors + classificators.

    options.anchors: {strides, offset, interpolated_scale_aspect_ratio, aspect_ratios};
    options.box_scale: [x, y, w, h] divisors (the input size for BlazeFace);
    options.score_clip and options.activation ("sigmoid"); options.weighted_nms.
    """

    def __init__(self, s: Settings) -> None:
        self.s = s
        a = s.options.get("anchors", {})
        self.anchors = ssd_anchors(
            s.input_size[0],
            s.input_size[1],
            [int(v) for v in a.get("strides", [8, 16, 16, 16])],
            float(a.get("offset", 0.5)),
            float(a.get("interpolated_scale_aspect_ratio", 1.0)),
            int(a.get("aspect_ratios", 1)),
        )
        w, h = s.input_size
        self.box_scale = np.array(s.options.get("box_scale", [w, h, w, h]), dtype=np.float32)
        self.clip = float(s.options.get("score_clip", 100.0))
        self.activation = s.options.get("activation", "sigmoid")
        self.weighted = bool(s.options.get("weighted_nms", True))
        self.order = (0, 1)

    def check(self, outputs: list[dict[str, Any]]) -> None:
        if len(outputs) != 2:
            raise DecoderError(
                f"anchor SSD has 2 outputs (regressors, classificators), this model has {len(outputs)}"
            )
        shapes = [list(o["shape"]) for o in outputs]
        c = len(self.s.labels)
        scores = [i for i, sh in enumerate(shapes) if sh[-1] == c]
        if not scores:
            raise DecoderError(
                f"no output of {shapes} has {c} class scores per anchor, as the card's labels need"
            )
        si = scores[-1]
        ri = 1 - si
        if shapes[ri][-1] < 4:
            raise DecoderError(f"regressors {shapes[ri]} have fewer than 4 values per anchor")
        for sh in shapes:
            if sh[-2] != len(self.anchors):
                raise DecoderError(
                    f"output {sh} has {sh[-2]} anchors, the card's anchor settings make "
                    f"{len(self.anchors)}"
                )
        self.order = (ri, si)

    def decode(self, outputs: list[np.ndarray]) -> list[Raw]:
        reg = outputs[self.order[0]][0].astype(np.float32, copy=False)
        raw = np.clip(outputs[self.order[1]][0], -self.clip, self.clip)
        scores = _activate(raw.astype(np.float32), self.activation)
        cls = np.argmax(scores, axis=1)
        best = scores[np.arange(len(cls)), cls]
        keep = best >= self.s.thresholds[cls]
        if not keep.any():
            return []
        r, a = reg[keep, :4] / self.box_scale, self.anchors[keep]
        centre = r[:, :2] + a
        half = r[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        ok = _valid(boxes)
        kept = nms(
            boxes[ok],
            best[keep][ok],
            cls[keep][ok],
            self.s.nms_iou,
            self.s.max_detections,
            weighted=self.weighted,
        )
        return [Raw(c, s, tuple(float(v) for v in b)) for c, s, b in kept]


_FAMILIES: dict[str, type] = {
    "classify": Classification,
    "detect.ssd_postprocess": SsdPostprocess,
    "detect.yolo": Yolo,
    "detect.anchor_ssd": AnchorSsd,
}
