"""Hardware-in-loop rig: a virtual board by default, a real one with --hil-port and --hil-firmware.

The options are registered here for `pytest tests/hil` (an initial conftest); when the suite runs
from the repository root, tests/conftest.py must register them too (`from tests.hil.rig import add_hil_options` in its pytest_addoption).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hil.rig import RealRig, VirtualRig, add_hil_options


def pytest_addoption(parser: pytest.Parser) -> None:
    try:
        add_hil_options(parser)
    except ValueError:
        pass  # tests/conftest.py registered them already


def _opt(config: pytest.Config, name: str) -> object:
    try:
        return config.getoption(name)
    except ValueError:
        return None


def pytest_configure(config: pytest.Config) -> None:
    if _opt(config, "--hil-port") and not _opt(config, "--hil-firmware"):
        raise pytest.UsageError("--hil-port needs --hil-firmware BUILD_DIR (what to flash)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.hil)


@pytest.fixture
def rig(
    request: pytest.FixtureRequest, make_station, tmp_path: Path
) -> Iterator[VirtualRig | RealRig]:
    """A flashed and configured unit, and a station listening on its serial line."""
    port = _opt(request.config, "--hil-port")
    firmware = _opt(request.config, "--hil-firmware")
    if port:
        r: VirtualRig | RealRig = RealRig(
            str(port),
            Path(str(firmware)),
            str(_opt(request.config, "--hil-chip")),
            make_station,
            tmp_path,
            float(_opt(request.config, "--hil-timeout") or 120),
        )
    else:
        r = VirtualRig(make_station, tmp_path)
    yield r
    r.close()
