"""`infer --model NAME` takes what `models list` shows, `infer --draw` writes the boxes, and an
optional wheel that is absent is "not installed", not an error."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from agent.inference import cli

from .conftest import FIXTURES, copy_package

REPO = FIXTURES.parents[1]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fieldstation")
    cli.add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _scene(tmp_path: Path) -> Path:
    """A demo scene with an animal in it, as a real JPEG file."""
    from agent.scenes import scene_jpeg

    path = tmp_path / "scene.jpg"
    path.write_bytes(scene_jpeg(1))
    return path


def test_infer_takes_a_name_that_models_list_shows(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # models list shows ./models, as in a fresh clone
    assert run(["models", "list", "--json", "--data-dir", str(tmp_path)]) == 0
    names = {p["name"] for p in json.loads(capsys.readouterr().out)["packages"]}
    assert "scene-animal" in names
    image = _scene(tmp_path)
    assert run(["infer", str(image), "--model", "scene-animal", "--data-dir", str(tmp_path)]) == 0
    assert "[scene-animal@1.0.0]" in capsys.readouterr().out
    assert run(["infer", str(image), "--model", "scene-animal@1.0.0",
                "--data-dir", str(tmp_path)]) == 0  # fmt: skip


def test_infer_with_an_unknown_name_says_where_it_looked(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    image = _scene(tmp_path)
    assert run(["infer", str(image), "--model", "megadetector", "--data-dir", str(tmp_path)]) == 2
    assert "megadetector" in capsys.readouterr().err


def test_infer_draw_writes_the_image_with_its_boxes(tmp_path: Path, capsys):
    image = _scene(tmp_path)
    out = tmp_path / "drawn.jpg"
    status = run(["infer", str(image), "--model", str(FIXTURES / "scene-animal"), "--json",
                  "--draw", str(out), "--data-dir", str(tmp_path)])  # fmt: skip
    assert status == 0
    doc = json.loads(capsys.readouterr().out)
    (box,) = [d["box"] for d in doc["detections"]]
    drawn = np.asarray(Image.open(out).convert("RGB")).astype(int)
    plain = np.asarray(Image.open(image).convert("RGB")).astype(int)
    assert drawn.shape == plain.shape
    h, w = plain.shape[:2]
    x0, y0 = round(box[0] * w) + 1, round(box[1] * h) + 20  # on the left edge, below the label
    x1 = round((box[0] + box[2]) * w) - 2
    # the box edge is drawn in the animal colour (green), the inside is left as it was
    assert drawn[y0, x0, 1] > 150 and drawn[y0, x0, 0] < 120
    assert drawn[y0, x1, 1] > 150
    centre = (round((box[1] + box[3] / 2) * h), round((box[0] + box[2] / 2) * w))
    assert np.abs(drawn[centre] - plain[centre]).max() < 40


def test_infer_draw_with_several_images_fills_a_folder(tmp_path: Path, capsys):
    a = _scene(tmp_path)
    b = tmp_path / "b.jpg"
    b.write_bytes(a.read_bytes())
    run(["infer", str(a), str(b), "--model", str(FIXTURES / "scene-animal"),
         "--draw", str(tmp_path / "drawn"), "--data-dir", str(tmp_path)])  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == ["b.jpg", "scene.jpg"]


def test_models_list_says_not_installed_for_an_absent_optional_wheel(tmp_path: Path, capsys):
    folder = tmp_path / "extra"
    folder.mkdir()
    pkg = copy_package("blazeface-short-range", folder)
    card = json.loads((pkg / "model.json").read_text())
    card["model"]["resource"]["distribution"] = "wildcam-absent-wheel"
    (pkg / "model.json").write_text(json.dumps(card))
    assert run(["models", "list", "--dir", str(folder), "--data-dir", str(tmp_path)]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if "blazeface" in line]
    assert "not installed" in row and "error" not in row


def test_models_list_on_a_clean_clone_exits_0():
    r = subprocess.run(
        [sys.executable, "-m", "agent", "models", "list", "--data-dir", "/nonexistent-fs"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "error" not in r.stdout
