"""The firmware core's own host tests (C, -Wall -Wextra -Werror), run from pytest."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "esp32" / "firmware" / "components" / "wildcam_core"
VECTORS = Path(__file__).resolve().parents[2] / "esp32" / "test-vectors"


def make(target: str, build: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    if not shutil.which("make") or not shutil.which("gcc"):
        pytest.fail("make and gcc are needed for the host core tests: apt-get install make gcc")
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(CORE), target, f"BUILD={build}", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


def summary(stdout: str) -> tuple[int, int]:
    last = stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"(\d+) passed, (\d+) failed", last)
    assert m, f"last line is not a pass/fail count: {last!r}"
    return int(m[1]), int(m[2])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One build of the tests and the library (make all), shared by the tests below."""
    build = tmp_path_factory.mktemp("core-build")
    return build, make("all", build)


def test_host_core_tests_pass_and_check_every_vector(built):
    _, proc = built
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed, failed = summary(proc.stdout)
    assert failed == 0 and passed >= 21
    n_files = len(list(VECTORS.glob("*.json")))
    assert f"{n_files} vector files checked" in proc.stdout


def test_host_core_tests_pass_under_address_and_ub_sanitizers(tmp_path):
    proc = make("asan", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary(proc.stdout)[1] == 0


def test_host_tests_fail_when_a_vector_disagrees(built, tmp_path):
    vectors = tmp_path / "vectors"
    shutil.copytree(VECTORS, vectors)
    doc = json.loads((vectors / "config.json").read_text())
    doc["decoded"]["jpeg_quality"] = 13  # the frame bytes still say 12
    (vectors / "config.json").write_text(json.dumps(doc))
    build, _ = built
    proc = subprocess.run([str(build / "test_core"), str(vectors)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert summary(proc.stdout)[1] >= 1
    assert "config.json: encoding differs" in proc.stdout


def test_shared_library_builds_with_warnings_as_errors(built):
    build, proc = built
    assert proc.returncode == 0, proc.stderr
    assert "-Werror" in proc.stdout and (build / "libwildcam_core.so").is_file()
