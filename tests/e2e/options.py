"""The e2e suite's command-line options; tests/conftest.py calls this from its pytest_addoption."""

from __future__ import annotations

from typing import Any


def add_e2e_options(parser: Any) -> None:
    group = parser.getgroup("e2e", "end-to-end chaos, field link and soak (tests/e2e)")
    group.addoption(
        "--chaos-minutes",
        type=float,
        default=1.0,
        help="minutes of chaos in tests/e2e (1 by default, for CI; 10 or more on hardware); "
        "the soak and field-link runs scale with it",
    )
    group.addoption(
        "--chaos-seed",
        type=int,
        default=None,
        help="seed of the chaos schedule (default: from the clock; the report says which)",
    )
    group.addoption(
        "--soak-minutes",
        type=float,
        default=0.75,
        help="minutes of steady traffic in the soak (0.75 by default; hours on hardware)",
    )
    group.addoption(
        "--soak-interval",
        type=float,
        default=None,
        help="seconds between soak samples (default: 60 for soaks of 30 minutes or more, "
        "else a thirtieth of the soak)",
    )
    group.addoption(
        "--e2e-report",
        default=None,
        help="folder the e2e reports are copied to (default: tests/e2e/reports)",
    )
