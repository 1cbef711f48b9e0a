"""The `fieldstation` command behaves in pipes and scripts: a closed pipe ends it quietly, --json
is only JSON, every read command has --json, and --help describes every command and option."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.capture import Capture
from agent.cli import build_parser
from agent.store import BUFFER_FILE, Store
from tests.helpers import jpeg

READ_COMMANDS = [
    "status",
    "queue",
    "config check",
    "models list",
    "models status",
    "upload status",
    "esp32 inventory",
    "buffer tables",
]


@pytest.fixture(scope="module")
def big_buffer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A buffer whose `queue` output is larger than a pipe holds (2000 units)."""
    folder = tmp_path_factory.mktemp("big")
    store = Store(folder / BUFFER_FILE)
    image = jpeg(1)
    store.import_captures(
        Capture(
            unit_id=f"unit-{i:04d}",
            unit_ref=str(i),
            path="serial",
            jpeg=image,
            received_at=1_780_000_000.0 + i,
            unit_time=1_780_000_000 + i,
            unit_time_kind="epoch_s",
            trigger="pir",
            meta={},
        )
        for i in range(2000)
    )
    store.close()
    return folder


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_queue_into_head_ends_quietly(big_buffer: Path, extra: list[str]):
    """`fieldstation queue | head -1`: the reader goes away after one line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "queue", "--data-dir", str(big_buffer), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141
    assert first and err == ""


def _leaf_parsers() -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs and prefix:
            out[prefix] = parser
        for action in subs:
            for name, sp in action.choices.items():
                walk(sp, f"{prefix} {name}".strip())

    walk(build_parser(), "")
    return out


def test_every_command_has_a_description_and_every_option_help():
    missing = []
    for name, parser in _leaf_parsers().items():
        if not parser.description:
            missing.append(f"{name}: no description")
        for action in parser._actions:
            if action.help is None and action.dest != "help":
                missing.append(f"{name}: {action.option_strings or action.dest} has no help")
    assert not missing, "\n".join(missing)


def test_every_read_command_has_json():
    leaves = _leaf_parsers()
    lacking = [
        name
        for name in READ_COMMANDS
        if name in leaves
        and "--json" not in {o for a in leaves[name]._actions for o in a.option_strings}
    ]
    assert not lacking


def test_help_says_what_the_command_is_and_its_exit_codes():
    r = subprocess.run(
        [sys.executable, "-m", "agent", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "thin layer" not in r.stdout
    assert "run a WildCAM field station" in r.stdout
    assert "exit status" in r.stdout and "141" in r.stdout


def test_config_check_json_lists_problems_with_their_lines(tmp_path: Path):
    f = tmp_path / "station.toml"
    f.write_text("[mqtt]\nport = 70000\n")
    r = subprocess.run(
        [sys.executable, "-m", "agent", "config", "check", str(f), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and r.stderr == ""
    doc = json.loads(r.stdout)
    assert doc["ok"] is False
    assert doc["problems"] == [
        {
            "key": "mqtt.port",
            "line": 2,
            "variable": None,
            "reason": "70000 is above the maximum 65535",
        }
    ]


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["queue"]])
def test_no_buffer_exits_2_as_help_says_not_1_which_means_alarms(tmp_path: Path, command):
    """A script reading `status --json`'s exit code must not take "no buffer here" for
    "the daemon runs with alarms" (the audit found exit 1)."""
    r = subprocess.run(
        [sys.executable, "-m", "agent", *command, "--data-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r
    assert "no buffer database" in r.stderr and "--data-dir" in r.stderr
    assert r.stdout == ""
