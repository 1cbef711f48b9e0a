"""tests/e2e: every test here carries the `e2e` marker; options come from tests/e2e/options.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.netlink import CloudLink, make_links
from tests.e2e.report import publish

HERE = Path(__file__).resolve().parent
REPORTS = HERE / "reports"  # the documented place (README: End-to-end and chaos)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # longer runs on hardware get a pytest-timeout that grows with them
    minutes = float(config.getoption("--chaos-minutes")) + float(config.getoption("--soak-minutes"))
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.timeout(300 + int(150 * minutes)))


@pytest.fixture
def chaos_minutes(request: pytest.FixtureRequest) -> float:
    return max(0.2, float(request.config.getoption("--chaos-minutes")))


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    given = request.config.getoption("--chaos-seed")
    return int(given) if given is not None else int(time.time()) % 100_000


@pytest.fixture
def report_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A folder under the test's tmp dir; copied to --e2e-report (or tests/e2e/reports) after."""
    folder = tmp_path / "report"
    folder.mkdir()
    yield folder
    dest = request.config.getoption("--e2e-report")
    publish(folder, Path(dest) if dest else REPORTS)


@pytest.fixture
def cloud_links() -> Iterator[tuple[dict[str, CloudLink], str]]:
    """One link per cloud: veth pairs into namespaces when possible, else loopback."""
    links, how = make_links(["aws", "azure", "gcp"])
    try:
        yield links, how
    finally:
        for link in links.values():
            link.close()
