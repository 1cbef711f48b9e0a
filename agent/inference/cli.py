"""`fieldstation models list` and `fieldstation infer IMAGE... [--model PKG] [--json]`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.inference.image import ImageError
from agent.inference.package import CARD, PackageError, load_package, read_package
from agent.inference.pipeline import Pipeline
from agent.inference.privacy import upload_variant
from agent.inference.runtime import RuntimeMissing, runtime_name
from agent.inference.settings import models_dir, resolve_package


def add_subcommands(subparsers: Any) -> None:
    """Add `models` and `infer` to the fieldstation command."""

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config", type=Path, default=None,
            help="station TOML (default /etc/fieldstation/station.toml if present)",
        )  # fmt: skip
        sp.add_argument("--data-dir", type=Path, default=None, help="override station.data_dir")

    models = subparsers.add_parser("models", help="model packages on this station")
    msub = models.add_subparsers(dest="models_command", required=True)
    lst = msub.add_parser("list", help="installed packages, which are active, their versions")
    with_config(lst)
    lst.add_argument(
        "--dir", type=Path, action="append", default=[],
        help="also list packages in this folder (repeatable; ./models is listed when present)",
    )  # fmt: skip
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=cmd_models_list)

    infer = subparsers.add_parser("infer", help="run a model package on JPEG files")
    with_config(infer)
    infer.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    infer.add_argument(
        "--model", default=None,
        help="package folder, tar or model.json (default: the configured detector)",
    )  # fmt: skip
    infer.add_argument("--classifier", default=None, help="package run on each detection's crop")
    infer.add_argument("--threads", type=int, default=None, help="interpreter threads")
    infer.add_argument("--json", action="store_true", help="one JSON document per image")
    infer.set_defaults(func=cmd_infer)


def _config(args: argparse.Namespace) -> Any:
    from agent.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise SystemExit(f"fieldstation: {exc}") from None
    if getattr(args, "data_dir", None):
        config = config.replace("station", data_dir=str(args.data_dir))
    return config


@contextlib.contextmanager
def _quiet_runtime() -> Iterator[None]:
    """Hide the runtime's native "INFO: Created TensorFlow Lite XNNPACK delegate" line (it
    writes to fd 2 directly) so command output stays readable; Python errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _candidates(folders: list[Path]) -> list[Path]:
    found: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for card in sorted(folder.glob(f"*/{CARD}")) + sorted(folder.glob(f"*/*/{CARD}")):
            found.append(card.parent)
        found += sorted(p for p in folder.glob("*.tar*") if p.is_file())
    return list(dict.fromkeys(found))


def cmd_models_list(args: argparse.Namespace) -> int:
    config = _config(args)
    section = config.inference
    mdir = models_dir(section, Path(config.data_dir))
    folders = [mdir, *args.dir]
    if Path("models").is_dir() and not args.dir:
        folders.append(Path("models"))
    active = {}
    for role in ("detector", "classifier"):
        ref = getattr(section, role)
        if ref:
            active[resolve_package(ref, mdir).resolve()] = role
    rows = []
    for path in _candidates(folders):
        row: dict[str, Any] = {"path": str(path), "active": active.get(path.resolve(), "")}
        try:
            card, _model, _files, _src = read_package(path)
            row.update(
                name=card.name, version=card.version, task=card.task, labels=len(card.labels)
            )
            with _quiet_runtime():
                load_package(path, threads=section.threads, xnnpack=section.xnnpack)
            row["status"] = "ok"
        except (PackageError, RuntimeMissing) as exc:
            row.setdefault("name", path.name)
            row["status"] = f"error: {getattr(exc, 'reason', exc)}"
        rows.append(row)
    try:
        runtime = runtime_name()
    except RuntimeMissing as exc:
        runtime = f"missing ({exc})"
    if args.json:
        print(
            json.dumps(
                {"runtime": runtime, "folders": [str(f) for f in folders], "packages": rows},
                indent=2,
            )
        )
        return 0
    print(f"runtime   {runtime}")
    print(f"folders   {', '.join(str(f) for f in folders)}")
    if not rows:
        print("no model packages found")
        return 0
    print(
        f"{'NAME':<22} {'VERSION':<8} {'TASK':<23} {'LABELS':>6}  {'ACTIVE':<10} {'STATUS':<6} PATH"
    )
    for r in rows:
        print(
            f"{r['name']:<22} {r.get('version', '-'):<8} {r.get('task', '-'):<23} "
            f"{r.get('labels', '-'):>6}  {r['active'] or '-':<10} {r['status']:<6} {r['path']}"
        )
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def cmd_infer(args: argparse.Namespace) -> int:
    config = _config(args)
    section = config.inference
    mdir = models_dir(section, Path(config.data_dir))
    ref = args.model or section.detector
    if not ref:
        print(
            "fieldstation infer: no --model given and no [inference] detector configured",
            file=sys.stderr,
        )
        return 2
    threads = args.threads or section.threads
    cref = args.classifier if args.classifier is not None else None
    if cref is None and not args.model:
        cref = section.classifier  # the configured pair, as the station runs it
    try:
        with _quiet_runtime():
            detector = load_package(
                resolve_package(ref, mdir), threads=threads, xnnpack=section.xnnpack
            )
            classifier = None
            if cref:
                classifier = load_package(
                    resolve_package(cref, mdir), threads=threads, xnnpack=section.xnnpack
                )
    except (PackageError, RuntimeMissing) as exc:
        print(f"fieldstation infer: {exc}", file=sys.stderr)
        return 2
    pipeline = Pipeline(
        detector, classifier,
        classify_groups=tuple(section.classify_groups), crop_margin=section.crop_margin,
        max_pixels=section.max_pixels, min_side=section.min_side,
    )  # fmt: skip
    status = 0
    for path in args.images:
        try:
            analysis = pipeline.analyse(path.read_bytes())
        except (OSError, ImageError) as exc:
            status = 1
            if args.json:
                print(json.dumps({"image": str(path), "error": str(exc)}))
            else:
                print(f"{path}: error: {exc}")
            continue
        variant = upload_variant(section.person_policy, analysis.detections)
        if args.json:
            doc = {
                "image": str(path),
                "size": list(analysis.size),
                "empty": analysis.empty,
                "upload_variant": variant,
                "detections": [d.as_dict() for d in analysis.detections],
                "timings_ms": {k: round(v * 1000, 2) for k, v in analysis.timings.items()},
            }
            print(json.dumps(doc))
            continue
        ms = sum(analysis.timings.values()) * 1000
        w, h = analysis.size
        head = f"{path}: {w}x{h}, {len(analysis.detections)} detection(s), {ms:.1f} ms"
        print(head + (" (empty)" if analysis.empty else f", upload {variant}"))
        for d in analysis.detections:
            print("  " + _line(d, w, h))
            for c in d.children:
                print("    " + _line(c, w, h))
    return status


def _line(d: Any, w: int, h: int) -> str:
    where = "whole frame"
    if d.box is not None:
        x, y, bw, bh = d.box
        where = (
            f"box x={x:.3f} y={y:.3f} w={bw:.3f} h={bh:.3f} ({round(bw * w)}x{round(bh * h)} px)"
        )
    return f"{d.label:<12} {d.group:<8} {d.score:.3f}  {where}  [{d.model}@{d.model_version}]"
