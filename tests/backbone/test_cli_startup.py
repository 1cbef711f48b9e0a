"""`fieldstation --help` and `status` start quickly: the command line imports no heavy library.

The time itself is a benchmark (bench/bench_startup.py); this checks the behaviour behind it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
HEAVY = ("numpy", "ai_edge_litert", "tflite_runtime", "fastapi", "starlette", "PIL", "cv2")


def imported_after(code: str) -> set[str]:
    """The heavy top-level modules present in a fresh interpreter after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_the_command_line_imports_no_heavy_library():
    assert imported_after("import agent.cli") == set()


def test_building_every_subcommand_imports_no_heavy_library():
    # what `fieldstation --help` and every subcommand's parsing pay before a command runs
    assert imported_after("import agent.cli; agent.cli.build_parser()") == set()


def test_status_with_the_daemon_down_imports_no_heavy_library(tmp_path):
    from agent.broker import free_port
    from agent.store import BUFFER_FILE, Store

    (tmp_path / "data").mkdir()
    Store(tmp_path / "data" / BUFFER_FILE, check_on_start=False).close()
    config = tmp_path / "station.toml"
    config.write_text(
        f'[station]\nid = "quick"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    code = (
        "import agent.cli, contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = agent.cli.main(['status', '--config', {str(config)!r}])\n"
        "assert code == 3, code  # the daemon is not reachable\n"
    )
    assert imported_after(code) == set()


def test_a_core_command_skips_the_components_commands_and_help_lists_them_all():
    # `status`, `run`, `queue`, `config`, `demo` parse without importing the components'
    # command modules (esp32, models, upload, ...): their import costs more than a status run
    probe = (
        "import agent.cli, contextlib, io, json, sys\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    agent.cli.main(['config', 'example'])\n"
        "print(json.dumps([m for m in agent.cli.COMPONENT_COMMANDS if m in sys.modules]))"
        # agent.install the core commands import anyway: it finds a station's data folder
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["agent.install"]
    usage = subprocess.run(
        [sys.executable, "-m", "agent", "--help"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    for command in ("esp32", "models", "upload", "power", "buffer", "status", "run"):
        assert command in usage, command
