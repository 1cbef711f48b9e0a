"""CRITICAL: checkpoint, stop work, arm the wake-up, and only then, once, the shutdown command.

A station halted without an armed wake-up never comes back by itself (PiJuice users trip over
exactly this), so a failed or missing wake-up cancels the shutdown.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from typing import Any

from agent.power.settings import PowerSection

log = logging.getLogger(__name__)

Runner = Callable[..., Any]  # subprocess.run's shape: (argv, timeout=…, capture_output=…)


class CriticalEpisode:
    """Runs the CRITICAL actions at most once per episode; an episode ends when CRITICAL ends."""

    def __init__(
        self,
        settings: PowerSection,
        *,
        checkpoint: Callable[[], None] | None,
        record: Callable[[str, str], None],
        run: Runner = subprocess.run,
        started_at: float = 0.0,
    ) -> None:
        self.s = settings
        self.started_at = started_at
        self.checkpoint = checkpoint
        self.record = record  # (kind, detail) into the power history
        self.run = run
        self.done = False
        self.outcome: str | None = None

    def end(self) -> None:
        self.done = False

    def begin(self, now: float) -> str:
        """Do the actions if this episode has not yet; return what happened."""
        if self.done:
            return self.outcome or "done"
        left = self.started_at + self.s.shutdown_grace_s - now
        if self.s.shutdown_command and left > 0:
            # just started (maybe woken by the RTC, maybe by a technician): time to hold it
            self.outcome = f"shutdown in {left:.0f} s unless held (start-up grace)"
            return self.outcome
        self.done = True
        if self.checkpoint is not None:
            try:
                self.checkpoint()
            except Exception as exc:  # a failed checkpoint must not stop the wake-up and halt
                log.error("power: database checkpoint failed: %s", exc)
        if not self.s.shutdown_command:
            self.outcome = "work stopped; no shutdown configured"
            return self.outcome
        if not self.s.wake_command:
            self.outcome = "shutdown refused: no wake_command to bring the station back"
            log.critical("power: %s", self.outcome)
            self.record("shutdown_refused", self.outcome)
            return self.outcome
        if not self._arm_wake(now):
            self.outcome = "shutdown cancelled: the wake-up could not be armed"
            log.critical("power: %s", self.outcome)
            self.record("shutdown_refused", self.outcome)
            return self.outcome
        argv = list(self.s.shutdown_command)
        log.critical("power: CRITICAL; wake-up armed, running %s", " ".join(argv))
        self.record("shutdown", " ".join(argv))
        try:
            result = self.run(argv, timeout=60, capture_output=True)
            ok = result.returncode == 0
        except (OSError, subprocess.SubprocessError) as exc:
            ok = False
            log.critical("power: shutdown command failed: %s", exc)
        self.outcome = "shutdown requested" if ok else "shutdown command failed"
        return self.outcome

    def _arm_wake(self, now: float) -> bool:
        seconds = self.s.wake_after_s
        values = {"seconds": str(seconds), "epoch": str(int(now + seconds))}
        argv = [part.format(**values) for part in self.s.wake_command]
        try:
            result = self.run(argv, timeout=30, capture_output=True)
        except (OSError, subprocess.SubprocessError) as exc:
            self.record("wake_failed", f"{' '.join(argv)}: {exc}")
            return False
        if result.returncode != 0:
            err = (result.stderr or b"").decode(errors="replace").strip()[:200]
            self.record("wake_failed", f"{' '.join(argv)}: exit {result.returncode} {err}")
            return False
        self.record("wake_armed", " ".join(argv))
        log.warning("power: wake-up armed: %s", " ".join(argv))
        return True
