"""Start-up time of `fieldstation --help` and `fieldstation status` against `python -c pass`.

    python bench/bench_startup.py [--repeat 20]

Each command runs as a fresh process, interleaved with the baseline so load from elsewhere hits
all of them; the figures are medians. Goal: at most 0.15 s above the bare interpreter, which means
no NumPy, LiteRT or FastAPI/Starlette import for commands that do not need them. Also lists the
heavy modules that building the command line imports.
"""

from __future__ import annotations

import argparse
import os
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


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped above: Popen must not wait for it again
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def installed_env(folder: Path) -> dict[str, str]:
    """Bytecode cached as on an installed station (pip compiles it), kept out of the tree."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    return env


def measure(repeat: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds per command."""
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
        env = installed_env(folder)
        for cmd in commands.values():
            timed(cmd, folder, env)  # warm the page cache and write the bytecode
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
        for _ in range(repeat):
            for name, cmd in commands.items():
                samples[name].append(timed(cmd, folder, env))
    return {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for k, v in samples.items()
    }


def run(quick: bool) -> list[Figure]:
    times = measure(3 if quick else 20)
    heavy = heavy_imports()
    out = []
    for name, label in (("help", "fieldstation --help"), ("status", "fieldstation status")):
        wall_s, cpu_s = times[name]
        note = f"CPU time; wall {wall_s:.3f} s vs {times['pass'][0]:.3f} s on this shared machine"
        if name == "help":
            note += f"; {'imports ' + ', '.join(heavy) if heavy else 'no heavy import'}"
        out.append(
            Figure(
                label, cpu_s, "s", times["pass"][1], "python -c pass", at_most(0.15, "excess"), note
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    times = measure(args.repeat)
    print(f"median of {args.repeat} fresh processes each")
    print(f"  {'':<8} {'wall ms':>9} {'above pass':>11} {'CPU ms':>9} {'above pass':>11}")
    for name, (w, c) in times.items():
        wp, cp = times["pass"]
        print(
            f"  {name:<8} {w * 1000:9.1f} {(w - wp) * 1000:+11.1f} {c * 1000:9.1f} {(c - cp) * 1000:+11.1f}"
        )
    print(f"heavy modules imported by the command line: {' '.join(heavy_imports()) or 'none'}")
    print("goal: help and status at most 150 ms above `python -c pass`")


if __name__ == "__main__":
    main()
