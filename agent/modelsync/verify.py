"""Checks a downloaded (or USB-carried) package passes before activation, in order: size, sha256,
ed25519 signature by a pinned key, safe extraction, the signed card, the package checks (card,
model sha256, shapes), golden self-tests, latency, then a shadow run against the active model.

`fieldstation models verify PKG` and the sync worker call the same functions.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.inference.image import ImageError
from agent.inference.package import ModelPackage, PackageError, pattern_image, read_package
from agent.inference.pipeline import Pipeline
from agent.modelsync import artifact as art


class VerifyError(Exception):
    """A version is refused at `stage` (download, verify, selftest, shadow, probation)."""

    def __init__(self, stage: str, reason: str, *, retry: bool = False, code: str = "") -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason
        self.retry = retry  # a transient fault (link, disk): try again on the next poll
        self.code = code  # "sha256" when the bytes are not the signed ones


@dataclass(frozen=True)
class Release:
    """One signed version as the manifest (or a `.sig` file beside a package) describes it."""

    name: str
    version: str
    sha256: str
    size: int
    card: dict[str, Any]
    key_id: str
    signature: str
    url: str = ""
    rollout_id: str = ""
    min_agreement: float | None = None

    @classmethod
    def from_json(cls, d: Any) -> Release:
        if not isinstance(d, dict):
            raise VerifyError("manifest", f"entry is {type(d).__name__}, not an object")
        if d.get("missing"):
            raise VerifyError(
                "manifest", f"{d.get('name')}@{d.get('version')} is not published", retry=True
            )
        try:
            return cls(
                name=str(d["name"]),
                version=str(d["version"]),
                sha256=str(d["sha256"]),
                size=int(d["size"]),
                card=dict(d["card"]),
                key_id=str(d.get("key_id") or ""),
                signature=str(d.get("signature") or ""),
                url=str(d.get("url") or ""),
                rollout_id=str(d.get("rollout_id") or ""),
                min_agreement=None if d.get("min_agreement") is None else float(d["min_agreement"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VerifyError("manifest", f"entry lacks or garbles {exc}") from None

    @classmethod
    def from_sig_file(cls, path: Path) -> Release:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise VerifyError("verify", f"{path}: {exc}") from None

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def verify_package(
    tar: Path, release: Release, trusted: list[str], dest: Path, max_bytes: int
) -> Path:
    """Check a package file against its release and extract it into `dest`; return the folder."""
    size = tar.stat().st_size
    if size > max_bytes:
        raise VerifyError("verify", f"package is {size} bytes, over the cap of {max_bytes}")
    if size != release.size:
        raise VerifyError(
            "verify", f"package is {size} bytes, the signed release says {release.size}", retry=True
        )
    digest = art.file_sha256(tar)
    if digest != release.sha256:
        raise VerifyError(
            "verify",
            f"sha256 is {digest}, the signed release says {release.sha256} (tampered?)",
            code="sha256",
        )
    message = art.signed_message(release.name, release.version, release.sha256, release.card)
    try:
        art.verify(message, release.signature, release.key_id, trusted)
        folder = art.safe_extract(tar, dest, max_bytes)
    except art.ArtifactError as exc:
        raise VerifyError("verify", str(exc)) from None
    card_path = folder / "model.json"
    try:
        card = json.loads(card_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise VerifyError("verify", f"model.json unreadable: {exc}") from None
    if card != release.card:
        raise VerifyError("verify", "the card in the package is not the card that was signed")
    if (card.get("name"), card.get("version")) != (release.name, release.version):
        raise VerifyError(
            "verify",
            f"the card says {card.get('name')}@{card.get('version')}, the release {release.id}",
        )
    return folder


def open_package(folder: Path, *, threads: int = 1, xnnpack: bool = True) -> ModelPackage:
    """Card, model sha256, TFL3, shapes and decoder fit; no goldens yet (see self_test)."""
    try:
        card, model, files, source = read_package(folder)
        digest = hashlib.sha256(model).hexdigest()
        if digest != card.sha256:
            raise PackageError(card.id, f"model sha256 is {digest}, the card says {card.sha256}")
        if len(model) < 8 or model[4:8] != b"TFL3":
            raise PackageError(card.id, "model file is not a TFLite flatbuffer (no TFL3)")
        return ModelPackage(card, model, source, files, threads=threads, xnnpack=xnnpack)
    except PackageError as exc:
        raise VerifyError("selftest", str(exc)) from None


def self_test(
    folder: Path,
    *,
    latency_budget_ms: float,
    deadline_s: float,
    threads: int = 1,
    xnnpack: bool = True,
    runs: int = 5,
) -> tuple[ModelPackage, float]:
    """Load, reproduce every golden, time the model; return it and its median ms per image."""
    started = time.monotonic()
    package = open_package(folder, threads=threads, xnnpack=xnnpack)
    try:
        package.selftest()
    except PackageError as exc:
        raise VerifyError("selftest", str(exc)) from None
    card_budget = package.card.latency_budget_ms
    budget = latency_budget_ms if card_budget is None else card_budget
    image = pattern_image("ramp", package.card.input.width, package.card.input.height)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        package.run(image)
        times.append((time.perf_counter() - t0) * 1000)
        if time.monotonic() - started > deadline_s:
            raise VerifyError("selftest", f"took longer than its deadline of {deadline_s:g} s")
    median = statistics.median(times)
    if median > budget:
        raise VerifyError(
            "selftest", f"latency {median:.1f} ms per image, over the budget of {budget:g} ms"
        )
    return package, median


@dataclass
class ShadowResult:
    """The candidate against the active model on the same recent captures."""

    captures: int = 0
    agree: int = 0
    candidate_nonempty: int = 0
    active_nonempty: int = 0
    candidate_labels: dict[str, int] = field(default_factory=dict)
    active_labels: dict[str, int] = field(default_factory=dict)
    disagreements: list[str] = field(default_factory=list)  # capture ids, first 20
    errors: int = 0
    seconds: float = 0.0
    cut_short: bool = False

    @property
    def agreement(self) -> float | None:
        return self.agree / self.captures if self.captures else None

    @property
    def nonempty_rate(self) -> float | None:
        return self.candidate_nonempty / self.captures if self.captures else None

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["agreement"] = self.agreement
        d["nonempty_rate"] = self.nonempty_rate
        return d


def shadow_run(
    candidate: Pipeline,
    active: Pipeline | None,
    captures: Iterable[tuple[str, bytes]],
    deadline_s: float,
    busy: Callable[[], bool] = lambda: False,
    yield_s: float = 0.5,
) -> ShadowResult:
    """Run both models on each capture; count agreement on empty/non-empty and labels.

    While `busy()` (live captures waiting for inference) it steps aside before each capture, for
    up to `yield_s`, so live captures go first and the shadow run still moves on under load.
    """
    result = ShadowResult()
    started = time.monotonic()
    for capture_id, jpeg in captures:
        until = time.monotonic() + yield_s
        while busy() and time.monotonic() < until:
            time.sleep(0.02)
        if time.monotonic() - started > deadline_s:
            result.cut_short = True
            break
        try:
            mine = candidate.analyse(jpeg)
        except ImageError:
            continue  # a bad image says nothing about the model
        except Exception:  # the candidate breaks on real data: an error, counted
            result.errors += 1
            result.captures += 1
            continue
        theirs = None
        if active is not None:
            try:
                theirs = active.analyse(jpeg)
            except Exception:  # the active model's trouble is not the candidate's
                theirs = None
        result.captures += 1
        result.candidate_nonempty += not mine.empty
        for d in mine.detections:
            result.candidate_labels[d.label] = result.candidate_labels.get(d.label, 0) + 1
        if theirs is None:
            result.agree += 1
            continue
        result.active_nonempty += not theirs.empty
        for d in theirs.detections:
            result.active_labels[d.label] = result.active_labels.get(d.label, 0) + 1
        if mine.empty == theirs.empty:
            result.agree += 1
        elif len(result.disagreements) < 20:
            result.disagreements.append(capture_id)
    result.seconds = round(time.monotonic() - started, 3)
    return result
