"""Start-up time of `fieldstation --help` and `fieldstation status` against `python -c pass`.

    python bench/bench_startup.py [--repeat 20]

Each command runs as a fresh process, interleaved with the baseline so load from elsewhere hits
all of them; the figures are medians. Goal: at most 0.15 s above the bare interpreter, which means
no NumPy, LiteRT or FastAPI/Starlette import for commands that do not need them. Also lists the
heavy modules that building the command line imports.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.broker import free_port  # noqa: E402
from bench.figures import Figure, at_most  # noqa: E402

HEAVY = ("numpy", "ai_edge_litert", "tflite_runtime", "fastapi", "starlette", "cv2", "PIL")


def fieldstation() -> list[str]:
    script = Path(sys.executable).parent / "fieldstation"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


def heavy_imports() -> list[str]:
    """Heavy modules in sys.modules after the command line is built (what --help pays)."""
    code = (
        "import sys, agent.cli; agent.cli.build_parser(); "
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return done.stdout.split()


def wall(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    return time.perf_counter() - t0


def measure(repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        folder = Path(tmp)
        from agent.store import BUFFER_FILE, Store

        data = folder / "data"
        data.mkdir()
        Store(data / BUFFER_FILE, check_on_start=False).close()
        config = folder / "station.toml"
        # a port nobody listens on: status reports the daemon down without waiting
        config.write_text(
            f'[station]\nid = "bench"\ndata_dir = "{data}"\n'
            f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'
        )
        commands = {
            "pass": [sys.executable, "-c", "pass"],
            "help": [*fieldstation(), "--help"],
            "status": [*fieldstation(), "status", "--config", str(config)],
        }
        for cmd in commands.values():
            wall(cmd, folder)  # warm the page cache and the bytecode
        samples: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(repeat):
            for name, cmd in commands.items():
                samples[name].append(wall(cmd, folder))
    return {k: statistics.median(v) for k, v in samples.items()}


def run(quick: bool) -> list[Figure]:
    times = measure(3 if quick else 20)
    heavy = heavy_imports()
    note = f"imports {', '.join(heavy)}" if heavy else "no heavy import"
    return [
        Figure(
            "fieldstation --help",
            times["help"],
            "s",
            times["pass"],
            "python -c pass",
            at_most(0.15, "excess"),
            note,
        ),
        Figure(
            "fieldstation status (daemon down)",
            times["status"],
            "s",
            times["pass"],
            "python -c pass",
            at_most(0.15, "excess"),
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    times = measure(args.repeat)
    print(f"median of {args.repeat} fresh processes each")
    for name, t in times.items():
        print(f"  {name:<8} {t * 1000:7.1f} ms   {(t - times['pass']) * 1000:+7.1f} ms above pass")
    print(f"heavy modules imported by the command line: {' '.join(heavy_imports()) or 'none'}")
    print("goal: help and status at most 150 ms above `python -c pass`")


if __name__ == "__main__":
    main()
