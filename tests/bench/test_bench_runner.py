"""`python -m bench` runs every bench_*.py it finds and writes one JSON and one Markdown table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]

TINY = """
import sys
from bench.figures import Figure, at_least, at_most


def run(quick: bool) -> list[Figure]:
    n = 1000 if quick else 10**6
    return [
        Figure("sum of a range", float(sum(range(n))), "", float(n * (n - 1) // 2), "formula",
               at_least(0.99)),
        Figure("a cost too high", 3.0, "ms", 1.0, "raw", at_most(1.5), "quick" if quick else ""),
        Figure("rss", 50.0, "MiB", None, "", at_most(80, "value")),
    ]


if __name__ == "__main__":
    print(run("--quick" in sys.argv))
"""

LEGACY = """
import argparse, json
ap = argparse.ArgumentParser()
ap.add_argument("--json", action="store_true")
args = ap.parse_args()
print("some table first")
print(json.dumps({"rate": 12.5, "nested": {"ratio": 0.5, "label": "x"}, "ok": True}))
"""

BROKEN = """
from bench.figures import Figure


def run(quick: bool) -> list[Figure]:
    raise RuntimeError("this bench fails on purpose")
"""


def run_bench(folder: Path, out: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--dir", str(folder), "--out", str(out), *more],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_quick_run_writes_figures_with_baselines_ratios_goals_and_the_machine(tmp_path):
    folder = tmp_path / "benches"
    folder.mkdir()
    (folder / "bench_tiny.py").write_text(TINY)
    (folder / "bench_legacy.py").write_text(LEGACY)
    (folder / "bench_old.py").write_text("print('no protocol, no --json')\n")
    out = tmp_path / "results"

    done = run_bench(folder, out)

    assert done.returncode == 0, done.stderr
    [result] = out.glob("*.json")
    doc = json.loads(result.read_text())
    assert doc["quick"] is True
    machine = doc["machine"]
    assert machine["cores"] >= 1 and machine["kernel"] and machine["python"] and machine["cpu"]
    assert machine["packages"]["paho-mqtt"] and len(machine["load_before"]) == 3
    benches = {b["bench"]: b for b in doc["benches"]}
    assert set(benches) == {"tiny", "legacy", "old"}

    tiny = benches["tiny"]
    assert tiny["status"] == "ok"
    figures = {f["name"]: f for f in tiny["figures"]}
    total = figures["sum of a range"]
    assert total["value"] == total["baseline"] == 499500.0
    assert total["ratio"] == 1.0 and total["goal"] == "ratio ≥ 0.99" and total["met"] is True
    assert figures["a cost too high"]["met"] is False
    assert figures["a cost too high"]["note"] == "quick"
    assert figures["rss"]["ratio"] is None and figures["rss"]["met"] is True

    legacy = benches["legacy"]
    assert legacy["status"] == "raw json"
    assert {f["name"]: f["value"] for f in legacy["figures"]} == {"rate": 12.5, "nested.ratio": 0.5}
    assert benches["old"]["status"] == "not adapted"

    table = (out / "latest.md").read_text()
    assert "| bench | figure | value | baseline (same run) | ratio | goal | met |" in table
    assert (
        "| tiny | sum of a range | 499500 | 499500 (formula) | 1.00 | ratio ≥ 0.99 | yes |" in table
    )
    assert "**no**" in table and "_not adapted_" in table
    assert f"{machine['cores']} cores" in table


def test_a_failing_bench_is_reported_and_the_run_exits_nonzero(tmp_path):
    folder = tmp_path / "benches"
    folder.mkdir()
    (folder / "bench_broken.py").write_text(BROKEN)
    out = tmp_path / "results"

    done = run_bench(folder, out)

    assert done.returncode == 1
    [result] = out.glob("*.json")
    [broken] = json.loads(result.read_text())["benches"]
    assert broken["status"] == "failed" and "fails on purpose" in broken["detail"]
    assert "_failed_" in (out / "latest.md").read_text()


def test_a_slow_bench_without_a_quick_mode_is_cut_short_without_failing_the_run(tmp_path):
    folder = tmp_path / "benches"
    folder.mkdir()
    pid_file = tmp_path / "daemon.pid"
    (folder / "bench_slow.py").write_text(
        "import subprocess, sys, time\n"
        'if "--json" in sys.argv:  # starts a daemon of its own, as the station benches do\n'
        f'    open({str(pid_file)!r}, "w").write(str(subprocess.Popen(["sleep", "300"]).pid))\n'
        "    time.sleep(30)\n"
    )
    out = tmp_path / "results"

    done = run_bench(folder, out, "--legacy-timeout", "2")

    assert done.returncode == 0, done.stderr
    [result] = out.glob("*.json")
    [slow] = json.loads(result.read_text())["benches"]
    assert (
        slow["status"] == "not adapted"
        and "run `python benches/bench_slow.py` alone" in (slow["detail"])
    )
    daemon = Path(f"/proc/{pid_file.read_text()}/stat")
    assert not daemon.exists() or daemon.read_text().rsplit(")", 1)[1].split()[0] == "Z", (
        "the bench's own daemon outlived the run"
    )
