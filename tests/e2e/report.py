"""The e2e report: what was injected and what was observed, as JSON and a short Markdown table,
plus the soak's resource chart (PNG, drawn with Pillow)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Report:
    """One test's record; `write` puts report.json and report.md in `folder`."""

    name: str
    seed: int
    injected: list[dict[str, Any]] = field(default_factory=list)
    observed: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started: float = 0.0

    def inject(self, at: float, what: str, **detail: Any) -> None:
        self.injected.append({"at_s": round(at, 2), "what": what, **detail})

    def check(self, name: str, ok: bool) -> bool:
        self.checks[name] = bool(ok)
        return bool(ok)

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        doc = {
            "name": self.name,
            "seed": self.seed,
            "injected": self.injected,
            "observed": self.observed,
            "checks": self.checks,
            "notes": self.notes,
        }
        (folder / f"{self.name}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        (folder / f"{self.name}.md").write_text(self.markdown())
        return folder / f"{self.name}.md"

    def markdown(self) -> str:
        counts: dict[str, int] = {}
        for event in self.injected:
            counts[event["what"]] = counts.get(event["what"], 0) + int(event.get("n", 1))
        lines = [f"# {self.name} (seed {self.seed})", "", "| injected | times |", "| --- | --- |"]
        lines += [f"| {what} | {n} |" for what, n in counts.items()]
        lines += ["", "| observed | value |", "| --- | --- |"]
        for key, value in self.observed.items():
            if isinstance(value, (dict, list)):
                value = json.dumps(value, default=str)
                if len(value) > 160:
                    value = value[:157] + "..."
            lines.append(f"| {key} | {value} |")
        lines += ["", "| check | result |", "| --- | --- |"]
        lines += [f"| {k} | {'pass' if v else 'FAIL'} |" for k, v in self.checks.items()]
        if self.notes:
            lines += ["", *(f"- {n}" for n in self.notes)]
        return "\n".join(lines) + "\n"


def publish(source: Path, dest: Path | None) -> None:
    """Copy a report folder to the documented place (tests/e2e/reports/ or --e2e-report)."""
    if dest is None:
        return
    dest.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file():
            shutil.copyfile(f, dest / f.name)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def chart(samples: list[dict[str, float]], series: list[tuple[str, str]], out: Path) -> Path:
    """One small panel per series (key, label) against time; the second half is shaded, since
    that is where growth is judged."""
    from PIL import Image, ImageDraw

    w, ph, pad = 640, 110, 8
    img = Image.new("RGB", (w, ph * len(series) + pad), "white")
    draw = ImageDraw.Draw(img)
    ts = [s["t"] for s in samples] or [0.0]
    t0, t1 = min(ts), max(ts) or 1.0
    for i, (key, label) in enumerate(series):
        top = i * ph + pad
        left, right, bottom = 70, w - 10, top + ph - 24
        draw.rectangle([left + (right - left) // 2, top, right, bottom], fill=(238, 242, 250))
        draw.rectangle([left, top, right, bottom], outline=(160, 160, 160))
        ys = [s.get(key, 0.0) for s in samples]
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        if hi == lo:
            hi = lo + 1.0
        draw.text((4, top), label, fill="black")
        draw.text((4, top + 14), _short(hi), fill=(90, 90, 90))
        draw.text((4, bottom - 12), _short(lo), fill=(90, 90, 90))
        pts = [
            (
                left + (right - left) * (s["t"] - t0) / max(1e-9, t1 - t0),
                bottom - (bottom - top) * (y - lo) / (hi - lo),
            )
            for s, y in zip(samples, ys, strict=True)
        ]
        if len(pts) > 1:
            draw.line(pts, fill=(30, 90, 200), width=2)
        draw.text((left, bottom + 4), f"0 s … {t1 - t0:.0f} s", fill=(90, 90, 90))
    img.save(out)
    return out


def _short(v: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.1f}{unit}"
    return f"{v:.0f}"
