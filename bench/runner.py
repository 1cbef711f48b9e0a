"""`python -m bench`: run every bench/bench_*.py, write bench/results/<date>.json and latest.md.

Each benchmark runs in its own process (its RSS, threads and crashes stay its own). A module that
follows the protocol of bench/figures.py (`run(quick) -> list[Figure]`) is called through
`python -m bench --child FILE`; one without `run()` but with a `--json` option is run as a script
and its JSON numbers are listed without baselines; any other is listed as "not adapted".
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.figures import Figure

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PACKAGES = (
    "wildcam-fieldstation", "paho-mqtt", "pyserial", "numpy", "pillow", "ai-edge-litert",
    "opencv-python-headless", "starlette", "fastapi", "uvicorn", "httptools", "requests",
    "psutil", "psycopg", "boto3", "moto",
)  # fmt: skip
QUICK_TIMEOUT_S = 150.0  # a quick run stays under three minutes with the benches of today
LEGACY_QUICK_TIMEOUT_S = 30.0  # a bench with no quick mode gets a short look only
FULL_TIMEOUT_S = 3 * 3600.0


@dataclass
class BenchResult:
    """What one benchmark file gave: its figures, or why there are none."""

    bench: str
    file: str
    status: str  # "ok", "raw json", "not adapted", "failed", "timed out"
    seconds: float = 0.0
    figures: list[Figure] = field(default_factory=list)
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "bench": self.bench,
            "file": self.file,
            "status": self.status,
            "seconds": round(self.seconds, 1),
            "figures": [f.to_json() for f in self.figures],
            "detail": self.detail,
        }


def discover(folder: Path, only: set[str] | None) -> list[Path]:
    files = sorted(folder.glob("bench_*.py"))
    if only:
        files = [f for f in files if f.stem.removeprefix("bench_") in only]
    return files


def follows_protocol(path: Path) -> bool:
    """A top-level `def run(quick...)`: read from the source, nothing imported."""
    tree = ast.parse(path.read_text(), str(path))
    return any(
        isinstance(node, ast.FunctionDef)
        and node.name == "run"
        and [a.arg for a in node.args.args][:1] == ["quick"]
        for node in tree.body
    )


def has_json_option(path: Path) -> bool:
    return '"--json"' in path.read_text()


def run_one(path: Path, quick: bool, legacy_quick_s: float = LEGACY_QUICK_TIMEOUT_S) -> BenchResult:
    name = path.stem.removeprefix("bench_")
    result = BenchResult(name, path.name, "not adapted")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(path.parent)])}
    if follows_protocol(path):
        with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
            emit = Path(tmp) / "figures.json"
            cmd = [sys.executable, "-m", "bench", "--child", str(path), "--emit", str(emit)]
            timeout = QUICK_TIMEOUT_S if quick else FULL_TIMEOUT_S
            done = _run(cmd + (["--quick"] if quick else []), env, timeout, result)
            if done is not None and done.returncode == 0 and emit.exists():
                result.figures = [Figure.from_json(d) for d in json.loads(emit.read_text())]
                result.status = "ok"
            elif done is not None:
                result.status = "failed"
                result.detail = _tail(done.stderr or done.stdout)
        return result
    if has_json_option(path):
        timeout = legacy_quick_s if quick else FULL_TIMEOUT_S
        done = _run([sys.executable, str(path), "--json"], env, timeout, result)
        if done is None:
            if quick:  # expected of a bench with no quick mode: not a failure of the run
                result.status = "not adapted"
                result.detail = (
                    f"no run(quick), and its full run takes over {timeout:.0f} s: "
                    f"run `python {path.relative_to(path.parent.parent)}` alone"
                )
            return result
        doc = _json_in(done.stdout)
        if done.returncode != 0 or doc is None:
            result.status = "failed"
            result.detail = _tail(done.stderr or done.stdout)
            return result
        result.status = "raw json"
        result.figures = [Figure(k, v, "") for k, v in _numbers(doc)]
        result.detail = "no run(quick) yet: its JSON numbers, without baselines or goals"
        return result
    result.detail = "no run(quick) and no --json option"
    return result


def _run(
    cmd: list[str], env: dict[str, str], timeout: float, result: BenchResult
) -> subprocess.CompletedProcess[str] | None:
    """Run one bench in its own process group, so a timeout also stops the daemons it started."""
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        _, stderr = proc.communicate()
        result.status = "timed out"
        result.detail = f"stopped after {timeout:.0f} s"
        if stderr:
            result.detail += ": " + _tail(stderr)
        result.seconds = time.monotonic() - started
        return None
    result.seconds = time.monotonic() - started
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the bench's process group (its stations, brokers, servers), SIGKILL if needed."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)  # anyone left in the group?
            except ProcessLookupError:
                return
            proc.poll()  # reap the leader, or the group never empties
            time.sleep(0.1)


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _json_in(stdout: str) -> object | None:
    """The JSON document a legacy bench printed: its whole output, or its last JSON line/block."""
    decoder = json.JSONDecoder()
    for start in [0] + [
        i for i, ch in enumerate(stdout) if ch == "{" and (i == 0 or stdout[i - 1] == "\n")
    ]:
        try:
            doc, _ = decoder.raw_decode(stdout[start:].strip())
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc
    return None


def _numbers(doc: object, prefix: str = "") -> list[tuple[str, float]]:
    if isinstance(doc, bool):
        return []
    if isinstance(doc, int | float):
        return [(prefix, float(doc))]
    if isinstance(doc, dict):
        out: list[tuple[str, float]] = []
        for key, value in doc.items():
            out += _numbers(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return []


def machine() -> dict[str, object]:
    """What the figures were measured on, including how busy the machine was."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["sqlite"] = sqlite3.sqlite_version
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "commit": commit or None,
        "load_before": list(os.getloadavg()),
    }


def markdown(doc: dict) -> str:
    m = doc["machine"]
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    load = " / ".join(f"{x:.2f}" for x in m["load_before"])
    load_after = " / ".join(f"{x:.2f}" for x in m.get("load_after", []))
    lines = [
        f"# Benchmarks, {doc['started']} ({'quick' if doc['quick'] else 'full'} run)",
        "",
        "Each figure beside its raw baseline measured in the same run. Written by `python -m bench`"
        + (" --quick" if doc["quick"] else "")
        + "; regenerate rather than edit.",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}",
        f"- load average (1/5/15 min): {load} before, {load_after} after"
        + (
            " — a shared machine: ratios hold better than absolute rates"
            if m["load_before"][0] > 1
            else ""
        ),
        f"- commit {m['commit']}; {pkgs}",
        "",
        "| bench | figure | value | baseline (same run) | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for b in doc["benches"]:
        if not b["figures"]:
            lines.append(f"| {b['bench']} | _{b['status']}_: {_cell(b['detail'])} | | | | | |")
            continue
        for f in b["figures"]:
            base = (
                ""
                if f["baseline"] is None
                else f"{_amount(f['baseline'], f['unit'])} ({f['baseline_name']})"
            )
            ratio = "" if f["ratio"] is None else f"{f['ratio']:.2f}"
            met = {True: "yes", False: "**no**", None: ""}[f["met"]]
            name = f["name"] + (f" — {f['note']}" if f["note"] else "")
            lines.append(
                f"| {b['bench']} | {_cell(name)} | {_amount(f['value'], f['unit'])} | {_cell(base)} "
                f"| {ratio} | {f['goal'] or ''} | {met} |"
            )
    lines.append("")
    lines.append("| bench | status | seconds |")
    lines.append("| --- | --- | --- |")
    for b in doc["benches"]:
        lines.append(f"| {b['bench']} | {b['status']} | {b['seconds']} |")
    return "\n".join(lines) + "\n"


def _amount(x: float, unit: str) -> str:
    number = f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
    return f"{number} {unit}" if unit else number


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def child(path: Path, emit: Path, quick: bool) -> int:
    """Import one benchmark module, call its run(quick) and write its figures as JSON."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    figures = module.run(quick)
    emit.write_text(json.dumps([f.to_json() for f in figures], indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small counts: every bench in < 3 min")
    ap.add_argument("--only", default="", help="comma list of bench names (ingest,cloud,...)")
    ap.add_argument("--dir", type=Path, default=HERE, help="where the bench_*.py files are")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="where results go")
    ap.add_argument(
        "--legacy-timeout",
        type=float,
        default=LEGACY_QUICK_TIMEOUT_S,
        help="with --quick: seconds given to a bench that has no run(quick) (default 30)",
    )
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--emit", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.emit, args.quick)

    only = {x.strip() for x in args.only.split(",") if x.strip()} or None
    started = datetime.now(UTC)
    doc: dict = {
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "quick": args.quick,
        "machine": machine(),
        "benches": [],
    }
    for path in discover(args.dir, only):
        print(f"bench {path.stem.removeprefix('bench_')} ...", file=sys.stderr, flush=True)
        result = run_one(path, args.quick, args.legacy_timeout)
        print(
            f"  {result.status} in {result.seconds:.1f} s, {len(result.figures)} figures"
            + (f"\n  {result.detail}" if result.status not in ("ok",) and result.detail else ""),
            file=sys.stderr,
            flush=True,
        )
        doc["benches"].append(result.to_json())
    doc["machine"]["load_after"] = list(os.getloadavg())
    doc["seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y-%m-%dT%H%M%SZ")
    (args.out / f"{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    text = markdown(doc)
    (args.out / "latest.md").write_text(text)
    print(text)
    print(f"wrote {args.out / f'{stamp}.json'} and {args.out / 'latest.md'}", file=sys.stderr)
    failed = [b for b in doc["benches"] if b["status"] in ("failed", "timed out")]
    return 1 if failed else 0
