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


def test_gntdev_5_5_passes_the_conformance_kit_on_interval_notifiers() -> None:
    """scheme 5.5: interval notifiers only; the list-subscription checks are skipped, saying why."""
    import os

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "mmu_notifier.conformance", "--mmu-driver", "gntdev", "-q", "-rs",
         "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "MMU_NOTIFIER_GNTDEV__SCHEME": "5.5"},
    )
    out = run.stdout
    assert run.returncode == 0, out[-5000:] + run.stderr[-2000:]
    assert "failed" not in out and "xfail" not in out
    assert "declares the capability 'interval_only'" in out
