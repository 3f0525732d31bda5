"""The plugin passes the conformance kit: the one test a third-party plugin adds to its own suite."""

from __future__ import annotations

import subprocess
import sys


def test_gntdev_passes_the_conformance_kit() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mmu_notifier.conformance", "gntdev", "-q"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
