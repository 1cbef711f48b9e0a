"""The model card, `model.json`: parsed and checked in one pass, every problem listed by key.

models/README.md documents each field.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.inference import decoders as dec

CARD = "model.json"
GROUPS = ("animal", "person", "vehicle", "other")
DTYPES = {"float32": np.float32, "uint8": np.uint8, "int8": np.int8}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_CARD_BYTES = 1 << 20


class PackageError(ValueError):
    """A model package that must not be activated; the message names it and says why."""

    def __init__(self, package: str, reason: str) -> None:
        self.package = package
        self.reason = reason
        super().__init__(f"model package {package}: {reason}")


# --- the card ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    width: int
    height: int
    layout: str  # NHWC | NCHW
    colour: str  # RGB | BGR
    dtype: str  # float32 | uint8 | int8
    resize: str  # letterbox | stretch
    pad_value: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    task: str
    input: InputSpec
    labels: tuple[str, ...]
    groups: dict[str, str]
    thresholds: dict[str, float]  # per label, every label present
    nms_iou: float
    max_detections: int
    decoder: dict[str, Any]
    model: dict[str, Any]  # {"file": ...} or {"resource": {"distribution": ..., "path": ...}}
    sha256: str
    selftest: tuple[dict[str, Any], ...]
    description: str = ""
    license: str = ""
    # rollout gates a card may set; a station's own [modelsync] figures apply when they are absent
    latency_budget_ms: float | None = None
    min_agreement: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, reason: str) -> None:
        self.items.append(f"{key}: {reason}")


def parse_card(data: bytes | str | dict[str, Any], source: str = "model.json") -> ModelCard:
    """Validate a card in one pass; a PackageError lists every problem with its key."""
    if isinstance(data, (bytes, str)):
        if len(data) > MAX_CARD_BYTES:
            raise PackageError(source, f"{CARD} is {len(data)} bytes, over {MAX_CARD_BYTES}")
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PackageError(source, f"{CARD} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PackageError(source, f"{CARD} must hold a JSON object, not {type(data).__name__}")
    p = _Problems()
    d = data

    def get(
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        where: dict | None = None,
        prefix: str = "",
    ) -> Any:
        src = d if where is None else where
        if key not in src:
            if default is ...:
                p.add(prefix + key, "missing")
                return None
            return default
        value = src[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            p.add(prefix + key, f"must be {_kind(kind)}, got a boolean")
            return None
        if not isinstance(value, kind):
            p.add(prefix + key, f"must be {_kind(kind)}, got {type(value).__name__}")
            return None
        return value

    fmt = get("format", int, 1)
    if fmt not in (1, None):
        p.add("format", f"unsupported format {fmt}; this station reads format 1")
    name = get("name", str)
    if name is not None and not _NAME_RE.match(name):
        p.add("name", f"{name!r} is not a lower-case name of letters, digits, '.', '_' and '-'")
    version = get("version", str)
    if version is not None and not _SEMVER_RE.match(version):
        p.add("version", f"{version!r} is not a semantic version such as 1.2.0")
    task = get("task", str)
    if task is not None and task not in dec.TASKS:
        p.add("task", f"{task!r} is not one of {', '.join(dec.TASKS)}")

    spec = _parse_input(get("input", dict, {}), p)

    labels = get("labels", list)
    if labels is not None:
        problem = None
        if not labels:
            problem = "must list at least one label"
        elif not all(isinstance(x, str) and x for x in labels):
            problem = "every label must be a non-empty string"
        elif len(set(labels)) != len(labels):
            problem = "labels must be unique"
        if problem:
            p.add("labels", problem)
            labels = None
        else:
            labels = tuple(labels)
    label_set = set(labels or ())

    groups: dict[str, str] = {}
    raw_groups = get("groups", dict, {})
    default_group = get("default_group", str, "other")
    if default_group not in GROUPS:
        p.add("default_group", f"{default_group!r} is not one of {', '.join(GROUPS)}")
    for label, group in (raw_groups or {}).items():
        if label not in label_set:
            p.add(f"groups.{label}", "is not one of the labels")
        elif group not in GROUPS:
            p.add(f"groups.{label}", f"{group!r} is not one of {', '.join(GROUPS)}")
        else:
            groups[label] = group
    for label in labels or ():
        groups.setdefault(label, default_group if default_group in GROUPS else "other")

    thresholds: dict[str, float] = {}
    raw_thr = get("thresholds", dict, {}) or {}
    default_thr = raw_thr.get("default", 0.5)
    for key, value in raw_thr.items():
        if key != "default" and key not in label_set:
            p.add(f"thresholds.{key}", "is not one of the labels (or 'default')")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            p.add(f"thresholds.{key}", f"{value!r} is not a score between 0 and 1")
    if not isinstance(default_thr, (int, float)) or isinstance(default_thr, bool):
        default_thr = 0.5
    for label in labels or ():
        value = raw_thr.get(label, default_thr)
        thresholds[label] = float(value) if isinstance(value, (int, float)) else 0.5

    nms_iou = get("nms_iou", (int, float), 0.45)
    if nms_iou is not None and not 0 < nms_iou <= 1:
        p.add("nms_iou", f"{nms_iou} is not an IoU in (0, 1]")
    max_det = get("max_detections", int, 100)
    if max_det is not None and not 1 <= max_det <= 1000:
        p.add("max_detections", f"{max_det} is not between 1 and 1000")
    decoder = get("decoder", dict, {})
    if decoder is not None and task in dec.TASKS:
        # each family declares the keys it takes (decoders.Option): none is taken on trust
        for key, reason in dec.option_problems(task, decoder):
            p.add(f"decoder.{key}", reason)

    model = get("model", dict, {"file": "model.tflite"})
    if model is not None:
        _check_model_ref(model, p)
    sha = get("sha256", str)
    if sha is not None and not _SHA_RE.match(sha):
        p.add("sha256", "must be 64 lower-case hex digits")
    selftest = get("selftest", list, [])
    for i, entry in enumerate(selftest or []):
        _check_selftest(entry, f"selftest[{i}]", p)
    description = get("description", str, "")
    license_ = get("license", str, "")
    latency_budget = get("latency_budget_ms", (int, float), None)
    if latency_budget is not None and not 0 < latency_budget <= 600_000:
        p.add("latency_budget_ms", f"{latency_budget} is not a time in (0, 600000] ms")
    min_agreement = get("min_agreement", (int, float), None)
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        p.add("min_agreement", f"{min_agreement} is not a share between 0 and 1")

    known = {
        "format", "name", "version", "task", "input", "labels", "groups", "default_group",
        "thresholds", "nms_iou", "max_detections", "decoder", "model", "sha256", "selftest",
        "description", "license", "author", "source", "notes", "latency_budget_ms",
        "min_agreement",
    }  # fmt: skip
    for key in d:
        if key not in known:
            p.add(key, f"unknown field; a card takes: {', '.join(sorted(known))}")
    if p.items:
        raise PackageError(source, "bad card: " + "; ".join(p.items))
    assert spec is not None  # a spec that did not parse left a problem above
    return ModelCard(
        name=name,
        version=version,
        task=task,
        input=spec,
        labels=labels,
        groups=groups,
        thresholds=thresholds,
        nms_iou=float(nms_iou),
        max_detections=max_det,
        decoder=decoder,
        model=model,
        sha256=sha,
        selftest=tuple(selftest),
        description=description,
        license=license_,
        latency_budget_ms=None if latency_budget is None else float(latency_budget),
        min_agreement=None if min_agreement is None else float(min_agreement),
        raw=d,
    )


def _kind(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
    }
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _parse_input(raw: dict[str, Any] | None, p: _Problems) -> InputSpec | None:
    raw = raw or {}
    bad = False
    known = ("width", "height", "layout", "colour", "dtype", "resize", "pad_value", "normalise")
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            p.add(f"input.{key}", f"unknown key; {hint}input takes: {', '.join(known)}")
            bad = True

    def field_(
        key: str, kind: type, default: Any, check: Callable[[Any], bool], reason: str
    ) -> Any:
        nonlocal bad
        value = raw.get(key, default)
        if (
            value is ...
            or isinstance(value, bool) != (kind is bool)
            or not isinstance(value, kind)
            or not check(value)
        ):
            p.add(f"input.{key}", reason if value is not ... else "missing")
            bad = True
            return None
        return value

    width = field_("width", int, ..., lambda v: 1 <= v <= 4096, "must be an integer 1..4096")
    height = field_("height", int, ..., lambda v: 1 <= v <= 4096, "must be an integer 1..4096")
    layout = field_("layout", str, "NHWC", lambda v: v in ("NHWC", "NCHW"), "must be NHWC or NCHW")
    colour = field_("colour", str, "RGB", lambda v: v in ("RGB", "BGR"), "must be RGB or BGR")
    dtype = field_("dtype", str, ..., lambda v: v in DTYPES, f"must be one of {', '.join(DTYPES)}")
    resize = field_(
        "resize",
        str,
        "letterbox",
        lambda v: v in ("letterbox", "stretch"),
        "must be letterbox or stretch",
    )
    pad = field_("pad_value", int, 0, lambda v: 0 <= v <= 255, "must be an integer 0..255")
    norm = raw.get("normalise", {"mean": [0, 0, 0], "std": [1, 1, 1]})
    mean = std = None
    if not isinstance(norm, dict):
        p.add("input.normalise", "must be an object with mean and std (3 numbers each)")
        bad = True
    else:
        mean, std = _triple(norm.get("mean"), "mean", p), _triple(norm.get("std"), "std", p)
        if mean is None or std is None:
            bad = True
        elif any(s == 0 for s in std):
            p.add("input.normalise.std", "must not contain 0")
            bad = True
    if bad or mean is None or std is None:
        return None
    return InputSpec(width, height, layout, colour, dtype, resize, pad, mean, std)


def _triple(value: Any, key: str, p: _Problems) -> tuple[float, float, float] | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        p.add(f"input.normalise.{key}", "must be a number or a list of 3 numbers")
        return None
    return (float(value[0]), float(value[1]), float(value[2]))


def _check_model_ref(model: dict[str, Any], p: _Problems) -> None:
    if "file" in model:
        f = model["file"]
        if not isinstance(f, str) or not f or "/" in f or "\\" in f or f.startswith("."):
            p.add("model.file", f"{f!r} must be a plain file name inside the package")
    elif "resource" in model:
        r = model["resource"]
        if not (
            isinstance(r, dict)
            and isinstance(r.get("distribution"), str)
            and isinstance(r.get("path"), str)
            and ".." not in r["path"].split("/")
        ):
            p.add("model.resource", "must be {distribution: <pip name>, path: <file in it>}")
    else:
        p.add("model", "must have file (in the package) or resource (in an installed package)")


PATTERNS = ("zeros", "ramp", "blobs")  # generated self-test inputs, see package.pattern_image


def _check_selftest(entry: Any, key: str, p: _Problems) -> None:
    if not isinstance(entry, dict):
        p.add(key, "must be an object")
        return
    if ("pattern" in entry) == ("image" in entry):
        p.add(key, "needs exactly one input: pattern (ramp, zeros, blobs) or image (a file)")
    if entry.get("pattern") not in (None, *PATTERNS):
        p.add(f"{key}.pattern", f"{entry['pattern']!r} is not one of {', '.join(PATTERNS)}")
    if "image" in entry and (
        not isinstance(entry["image"], str)
        or "/" in entry["image"]
        or entry["image"].startswith(".")
    ):
        p.add(f"{key}.image", "must be a plain file name inside the package")
    if "outputs" not in entry and "detections" not in entry:
        p.add(key, "needs expected outputs and/or detections")
    for out in entry.get("outputs", []) if isinstance(entry.get("outputs", []), list) else [None]:
        if not (
            isinstance(out, dict)
            and isinstance(out.get("index"), int)
            and isinstance(out.get("head"), list)
            and isinstance(out.get("mean"), (int, float))
        ):
            p.add(f"{key}.outputs", "each must be {index, head: [numbers], mean}")
            break
    if not isinstance(entry.get("detections", []), list):
        p.add(f"{key}.detections", "must be a list")
    for tol in ("atol", "rtol", "score_tol", "box_tol"):
        v = entry.get(tol, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            p.add(f"{key}.{tol}", f"{v!r} is not a tolerance between 0 and 1")
