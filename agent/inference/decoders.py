"""Output decoders, one per model family, behind one interface chosen by the card's `task`.

Each decoder checks the interpreter's output tensors against the card when a package is loaded
(so a card that contradicts the model is refused before it is activated), then turns the raw
(dequantised) outputs of one invoke into `Raw` results: class index, score and a box in
input-normalised (x0, y0, x1, y1), or no box for a whole-frame classification.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

TASKS = ("classify", "detect.ssd_postprocess", "detect.yolo", "detect.anchor_ssd", "segment")


class DecoderError(ValueError):
    """The model's tensors do not match what the card says."""


@dataclass(frozen=True)
class Raw:
    cls: int
    score: float
    box: tuple[float, float, float, float] | None  # input-normalised x0, y0, x1, y1


def _box(values: Any) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in values)
    return (x0, y0, x1, y1)


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


# --- the card's `decoder` object: each family declares the keys it takes --------------------------

_KIND_NAMES = {
    str: "a string",
    bool: "true or false",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "an object",
}


@dataclass(frozen=True)
class Option:
    """One key of the card's `decoder` object: its default, what it means and what it accepts.

    A family lists its keys as `OPTIONS = {"activation": Option("none", ..., choices=(...))}`;
    the card is checked against that in its one pass, and the decoder reads `take_options(...)`.
    `kind` defaults to the default's type; `check` is a further rule returning a reason or None.
    """

    default: Any
    help: str
    choices: tuple[Any, ...] = ()
    kind: type | tuple[type, ...] | None = None
    min: float | None = None
    max: float | None = None
    check: Callable[[Any], str | None] | None = None
    required: bool = False  # the card must say it (no default is safe)

    def problem(self, value: Any) -> str | None:
        """Why `value` is refused, in words, or None."""
        if value is None and self.default is None and not self.required:
            return None
        kind = self.kind or ((int, float) if type(self.default) is float else type(self.default))
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
            want = " or ".join(
                _KIND_NAMES.get(k, k.__name__) for k in kinds if k is not int or float not in kinds
            )
            return f"{_plain(value)} must be {want}"
        if self.choices and value not in self.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            return f"{value!r} is not one of {', '.join(map(repr, self.choices))}; {hint}".rstrip(
                "; "
            )
        if isinstance(value, (int, float)):  # min and max are given for numeric keys only
            if self.min is not None and not value >= self.min:  # `not >=`: NaN is refused too
                return f"{_plain(value)} is below the minimum {_plain(self.min)}"
            if self.max is not None and not value <= self.max:
                return f"{_plain(value)} is above the maximum {_plain(self.max)}"
        return self.check(value) if self.check else None


def _plain(value: Any) -> str:
    """A value as a person reads it: 3, 0.5, 'three', [1, 84, 8400] (never np.int32(1))."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]  # as the card writes them
    return repr(value) if isinstance(value, str) else str(value)


def _shape(output: dict[str, Any]) -> list[int]:
    return [int(v) for v in output["shape"]]


def option_problems(task: str, options: Any) -> list[tuple[str, str]]:
    """(key, reason) for each key of a card's `decoder` object that its family refuses."""
    family = _FAMILIES.get(task)
    if family is None:
        return []  # the card's `task` check says so
    schema: dict[str, Option] = getattr(family, "OPTIONS", {})
    if not isinstance(options, dict):
        return [("", "must be an object")]
    out = []
    for key, value in options.items():
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            takes = ", ".join(schema) or "no keys"
            out.append((key, f"unknown key; {hint}{task} takes: {takes}"))
            continue
        reason = schema[key].problem(value)
        if reason:
            out.append((key, reason))
    for key, opt in schema.items():
        if opt.required and key not in options:
            out.append((key, f"missing; {opt.help}"))
    return out


def take_options(schema: dict[str, Option], options: dict[str, Any]) -> dict[str, Any]:
    """Every key of `schema`, from `options` or its default; DecoderError naming each bad key."""
    bad = []
    for key, value in options.items():
        if key not in schema:
            bad.append(f"{key}: unknown key; known: {', '.join(schema)}")
        elif (reason := schema[key].problem(value)) is not None:
            bad.append(f"{key}: {reason}")
    bad += [f"{k}: missing; {o.help}" for k, o in schema.items() if o.required and k not in options]
    if bad:
        raise DecoderError("; ".join(bad))
    return {key: options.get(key, opt.default) for key, opt in schema.items()}


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

    OPTIONS: ClassVar[dict[str, Option]] = {
        "activation": Option(
            "none",
            "softmax for logits, sigmoid for independent scores, none when the model ends in one",
            choices=("none", "softmax", "sigmoid"),
        ),
        "top_k": Option(1, "best labels reported per image", min=1, max=1000),
    }

    def __init__(self, s: Settings) -> None:
        self.s = s
        o = take_options(self.OPTIONS, s.options)
        self.activation: str = o["activation"]
        self.top_k: int = o["top_k"]

    def check(self, outputs: list[dict[str, Any]]) -> None:
        if len(outputs) != 1:
            raise DecoderError(f"a classifier has one output tensor, this model has {len(outputs)}")
        shape = _shape(outputs[0])
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

    OPTIONS: ClassVar[dict[str, Option]] = {
        "label_offset": Option(
            0,
            "added to the model's class index (-1 when it counts background as 0)",
            min=-1000,
            max=1000,
        ),
        "num_classes": Option(
            None,
            "classes the graph's post-process op scores (read from the model)",
            kind=int,
            min=1,
        ),
    }

    def __init__(self, s: Settings) -> None:
        self.s = s
        o = take_options(self.OPTIONS, s.options)
        self.label_offset: int = o["label_offset"]
        self.num_classes: int | None = o["num_classes"]
        self.order: list[int] = [0, 1, 2, 3]

    def check(self, outputs: list[dict[str, Any]]) -> None:
        if len(outputs) != 4:
            raise DecoderError(
                "TFLite_Detection_PostProcess has 4 outputs (boxes, classes, scores, count); "
                f"this model has {len(outputs)}"
            )
        shapes = [_shape(o) for o in outputs]
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
        classes_in = self.num_classes
        if classes_in is not None and classes_in != len(self.s.labels):
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

    OPTIONS: ClassVar[dict[str, Option]] = {
        "layout": Option(
            "auto",
            "channels_first ([1, 4+C(+1), N], YOLOv8 export), boxes_last ([1, N, 4+C(+1)], YOLOv5) "
            "or auto (whichever dimension fits the labels, refused when both do)",
            choices=("auto", "channels_first", "boxes_last"),
        ),
        "objectness": Option(
            None,
            "say true (each box is x, y, w, h, objectness, class scores: YOLOv5) or false "
            "(x, y, w, h, class scores: YOLOv8); one label too many or too few would otherwise "
            "read as the other kind",
            kind=bool,
            required=True,
        ),
        "coords": Option(
            "pixels",
            "box centres and sizes in pixels of the model input, or normalised to 0..1",
            choices=("pixels", "normalised"),
        ),
        "activation": Option(
            "none",
            "applied to the scores: none when the model ends in a sigmoid, else sigmoid or softmax",
            choices=("none", "sigmoid", "softmax"),
        ),
    }

    def __init__(self, s: Settings) -> None:
        self.s = s
        o = take_options(self.OPTIONS, s.options)
        self.layout: str = o["layout"]
        self.objectness: bool = o["objectness"]
        self.coords: str = o["coords"]
        self.activation: str = o["activation"]

    def check(self, outputs: list[dict[str, Any]]) -> None:
        if len(outputs) != 1:
            raise DecoderError(f"a YOLO head has one output tensor, this model has {len(outputs)}")
        shape = _shape(outputs[0])
        c = len(self.s.labels)
        if len(shape) != 3 or shape[0] != 1:
            raise DecoderError(f"YOLO output {shape} is not [1, 4+C, N] or [1, N, 5+C]")
        extra = 5 if self.objectness else 4
        want = extra + c
        fits = {
            layout: shape[1 if layout == "channels_first" else 2] == want
            for layout in ("channels_first", "boxes_last")
        }
        if self.layout == "auto":
            if all(fits.values()):
                raise DecoderError(
                    f"YOLO output {shape} has {want} on both sides; say decoder.layout "
                    "(channels_first or boxes_last)"
                )
            layout = "channels_first" if fits["channels_first"] else "boxes_last"
            if not any(fits.values()):
                layout = "channels_first" if shape[1] < shape[2] else "boxes_last"
        else:
            layout = self.layout
        width = shape[1] if layout == "channels_first" else shape[2]
        if width != want:
            kind = "with objectness" if self.objectness else "without objectness"
            raise DecoderError(
                f"YOLO output {shape} ({layout}) has {width} values per box, which is "
                f"{width - extra} labels {kind}, but the card lists {c} labels (needs {want}); "
                "check the labels and decoder.objectness"
            )
        self.layout = layout

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
        return [Raw(c, s, _box(b)) for c, s, b in kept]


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
    options.score_clip and options.activation ("sigmoid"); options.weighted_nms;
    options.body_box (BlazePose): the result's box is grown from two keypoints to the whole body.
    """

    OPTIONS: ClassVar[dict[str, Option]] = {
        "anchors": Option(
            {},
            "how MediaPipe's SsdAnchorsCalculator lays the anchors: {strides, offset, "
            "interpolated_scale_aspect_ratio, aspect_ratios}",
            kind=dict,
            check=lambda v: _anchor_problem(v),
        ),
        "box_scale": Option(
            None,
            "[x, y, w, h] divisors of the regressors (default: the input size)",
            kind=list,
            check=lambda v: _numbers_problem(v, 4, positive=True),
        ),
        "score_clip": Option(
            100.0, "raw scores are clipped to +-this before the activation", min=0.001
        ),
        "activation": Option(
            "sigmoid", "applied to the class scores", choices=("sigmoid", "softmax", "none")
        ),
        "weighted_nms": Option(True, "blend overlapping boxes by score (MediaPipe's way)"),
        "body_box": Option(
            None,
            "BlazePose: grow each box to the body, {centre, edge, scale} (keypoint indexes)",
            kind=dict,
            check=lambda v: _body_box_problem(v),
        ),
    }
    ANCHORS: ClassVar[dict[str, Option]] = {
        "strides": Option(
            [8, 16, 16, 16],
            "one stride per SSD layer",
            kind=list,
            check=lambda v: _numbers_problem(v, None, positive=True, integers=True),
        ),
        "offset": Option(0.5, "anchor centre within its cell", min=0, max=1),
        "interpolated_scale_aspect_ratio": Option(
            1.0, "adds one anchor per cell when above 0", min=0, max=10
        ),
        "aspect_ratios": Option(1, "anchors per cell and layer", min=1, max=16),
    }

    def __init__(self, s: Settings) -> None:
        self.s = s
        o = take_options(self.OPTIONS, s.options)
        a = take_options(self.ANCHORS, o["anchors"])
        self.anchors = ssd_anchors(
            s.input_size[0],
            s.input_size[1],
            [int(v) for v in a["strides"]],
            float(a["offset"]),
            float(a["interpolated_scale_aspect_ratio"]),
            int(a["aspect_ratios"]),
        )
        w, h = s.input_size
        self.box_scale = np.array(o["box_scale"] or [w, h, w, h], dtype=np.float32)
        self.clip = float(o["score_clip"])
        self.activation: str = o["activation"]
        self.weighted: bool = o["weighted_nms"]
        self.body_box = BodyBox.from_options(o["body_box"])
        self.order = (0, 1)

    def check(self, outputs: list[dict[str, Any]]) -> None:
        if len(outputs) != 2:
            raise DecoderError(
                f"anchor SSD has 2 outputs (regressors, classificators), this model has {len(outputs)}"
            )
        shapes = [_shape(o) for o in outputs]
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
        if self.body_box is not None and shapes[ri][-1] < self.body_box.values_needed:
            raise DecoderError(
                f"regressors {shapes[ri]} have {shapes[ri][-1]} values per anchor; body_box "
                f"keypoints {self.body_box.centre} and {self.body_box.edge} need "
                f"{self.body_box.values_needed}"
            )
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
        if self.body_box is not None:
            boxes = self.body_box.grow(boxes, reg[keep], a, self.box_scale[:2])
        ok = _valid(boxes)
        kept = nms(
            boxes[ok],
            best[keep][ok],
            cls[keep][ok],
            self.s.nms_iou,
            self.s.max_detections,
            weighted=self.weighted,
        )
        return [Raw(c, s, _box(b)) for c, s, b in kept]


@dataclass(frozen=True)
class BodyBox:
    """BlazePose's way from a face to a body: a square centred on keypoint `centre` (mid-hip)
    whose half side is `scale` times the distance to keypoint `edge`, joined with the face box.

    MediaPipe's pose_detection_to_roi uses keypoints 0 and 1 and scale 1.25.
    """

    centre: int
    edge: int
    scale: float

    @classmethod
    def from_options(cls, raw: Any) -> BodyBox | None:
        if raw is None:
            return None
        if not isinstance(raw, dict) or set(raw) - {"centre", "edge", "scale"}:
            raise DecoderError(f"body_box {raw!r} must be {{centre, edge, scale}}")
        centre, edge, scale = raw.get("centre"), raw.get("edge"), raw.get("scale", 1.0)
        if not (_index(centre) and _index(edge)):
            raise DecoderError(f"body_box keypoints {centre!r}, {edge!r} must be indexes >= 0")
        assert isinstance(centre, int) and isinstance(edge, int)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= 10:
            raise DecoderError(f"body_box.scale {scale!r} must be a number in (0, 10]")
        return cls(centre, edge, float(scale))

    @property
    def values_needed(self) -> int:
        return 4 + 2 * (max(self.centre, self.edge) + 1)

    def grow(
        self, boxes: np.ndarray, reg: np.ndarray, anchors: np.ndarray, scale: np.ndarray
    ) -> np.ndarray:
        """[N, 4] face boxes joined with each anchor's body square, input-normalised."""
        c = reg[:, 4 + 2 * self.centre : 6 + 2 * self.centre] / scale + anchors
        e = reg[:, 4 + 2 * self.edge : 6 + 2 * self.edge] / scale + anchors
        with np.errstate(over="ignore", invalid="ignore"):  # wild values end as inf, then dropped
            half = np.linalg.norm(e - c, axis=1, keepdims=True) * self.scale
            body = np.concatenate([c - half, c + half], axis=1)
            return np.concatenate(
                [np.minimum(boxes[:, :2], body[:, :2]), np.maximum(boxes[:, 2:], body[:, 2:])],
                axis=1,
            )


def _anchor_problem(value: dict[str, Any]) -> str | None:
    try:
        take_options(AnchorSsd.ANCHORS, value)
    except DecoderError as exc:
        return str(exc)
    return None


def _body_box_problem(value: dict[str, Any]) -> str | None:
    try:
        BodyBox.from_options(value)
    except DecoderError as exc:
        return str(exc)
    return None


def _numbers_problem(
    value: list[Any], length: int | None, *, positive: bool = False, integers: bool = False
) -> str | None:
    kinds = (int,) if integers else (int, float)
    if length is not None and len(value) != length:
        return f"{_plain(value)} must hold {length} numbers"
    if not value:
        return "must hold at least one number"
    for v in value:
        if isinstance(v, bool) or not isinstance(v, kinds) or (positive and not v > 0):
            what = "integers" if integers else "numbers"
            return f"{_plain(value)} must hold {'positive ' if positive else ''}{what}"
    return None


def _index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class Segmentation:
    """One per-pixel score map, [1, H, W, 1] or [1, H, W], for a single label (a person mask).

    `mask` gives the map itself; `decode` reports the label once, boxed around the pixels at or
    above its threshold, when they cover at least options.min_area of the frame. options.activation:
    none (the model ends in a sigmoid, as MediaPipe's selfie segmentation does) or sigmoid.
    """

    OPTIONS: ClassVar[dict[str, Option]] = {
        "activation": Option(
            "none",
            "none when the model ends in a sigmoid (MediaPipe's selfie segmentation), else sigmoid",
            choices=("none", "sigmoid"),
        ),
        "min_area": Option(
            0.01, "smallest fraction of the frame reported as the label", min=0, max=1
        ),
    }

    def __init__(self, s: Settings) -> None:
        self.s = s
        o = take_options(self.OPTIONS, s.options)
        self.activation: str = o["activation"]
        self.min_area = float(o["min_area"])

    def check(self, outputs: list[dict[str, Any]]) -> None:
        if len(outputs) != 1:
            raise DecoderError(
                f"a segmentation model has one output, this model has {len(outputs)}"
            )
        shape = _shape(outputs[0])
        if not (len(shape) == 3 or (len(shape) == 4 and shape[-1] == 1)) or shape[0] != 1:
            raise DecoderError(f"output {shape} is not a mask [1, H, W, 1] or [1, H, W]")
        if len(self.s.labels) != 1:
            raise DecoderError(
                f"a mask has one label, the card lists {len(self.s.labels)}: {self.s.labels}"
            )

    def mask(self, outputs: list[np.ndarray]) -> np.ndarray:
        """[H, W] float32 scores in 0..1 over the model input."""
        m = outputs[0].reshape(outputs[0].shape[1], outputs[0].shape[2]).astype(np.float32)
        return np.clip(_activate(m, self.activation), 0.0, 1.0)

    def decode(self, outputs: list[np.ndarray]) -> list[Raw]:
        m = self.mask(outputs)
        on = m >= self.s.thresholds[0]
        if not on.any() or on.mean() < self.min_area:
            return []
        ys, xs = np.nonzero(on)
        h, w = m.shape
        box = (
            float(xs.min() / w),
            float(ys.min() / h),
            float((xs.max() + 1) / w),
            float((ys.max() + 1) / h),
        )
        return [Raw(0, float(m[on].mean()), box)]


_FAMILIES: dict[str, type] = {
    "classify": Classification,
    "detect.ssd_postprocess": SsdPostprocess,
    "detect.yolo": Yolo,
    "detect.anchor_ssd": AnchorSsd,
    "segment": Segmentation,
}
