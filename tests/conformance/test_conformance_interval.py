"""The kit's interval-notifier checks (invariants 17-23) against a correct interval driver and a broken copy.

``interval_mirror.py`` beside this file is a device mirror on interval
notifiers written with :class:`mmu_notifier.interval_pattern.IntervalMirror`.
Each test installs it under an entry point (a generated ``.dist-info`` on
``PYTHONPATH``) and runs the kit on it in a fresh interpreter.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from mmu_notifier.conformance import CHECKS
from mmu_notifier.conformance.cli import PLUGIN, plugin_autoloaded

pytest_plugins = ["pytester"]

INTERVAL_CHECKS = [name for name in CHECKS if name.startswith("test_interval_")]


def run_kit(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """``pytest --pyargs mmu_notifier.conformance ARGS`` in a fresh interpreter (so entry points are re-read)."""
    argv = ["--pyargs", "mmu_notifier.conformance", "-p", "no:cacheprovider", "-o", "addopts=", "-rfEs",
            "--mmu-budget", "60", "--mmu-examples", "10"]
    if not plugin_autoloaded():
        argv += ["-p", PLUGIN]
    return pytester.runpytest_subprocess(*argv, *args, timeout=600)


def failed(result: pytest.RunResult, test: str, driver: str) -> str:
    """The summary line of ``test[driver]`` if it failed (or errored), else ''."""
    pattern = re.compile(rf"^(FAILED|ERROR) \S*{re.escape(test)}\[{re.escape(driver)}\]")
    return next((line for line in result.outlines if pattern.match(line)), "")


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Untruncated summary lines in the kit's output."""
    monkeypatch.setenv("COLUMNS", "1000")


@pytest.fixture
def site(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The interval mirror and its broken copy, installed under their entry-point names."""
    root = pytester.path / "site"
    dist = root / "mmu_notifier_interval_mirror-0.1.0.dist-info"
    dist.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("interval_mirror.py"), root / "interval_mirror.py")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mmu-notifier-interval-mirror\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(
        "[mmu_notifier.drivers]\ninterval-mirror = interval_mirror:IntervalMirrorDriver\n"
        "interval-mirror-keeps-ranges = interval_mirror:KeepsRanges\n"
    )
    path = [str(root), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))
    return root


def test_the_kit_has_one_check_per_interval_invariant() -> None:
    assert len(INTERVAL_CHECKS) == 7
    for name in INTERVAL_CHECKS:
        assert "inv. " in CHECKS[name]


def test_an_interval_driver_passes_the_whole_kit(pytester: pytest.Pytester, site: Path) -> None:
    """Every check, the interval ones included, passes; nothing is skipped."""
    result = run_kit(pytester, "--mmu-driver", "interval-mirror")
    assert result.ret == 0, result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) == 0, outcomes
    assert outcomes["passed"] == len(CHECKS), outcomes


def test_a_driver_that_keeps_its_ranges_after_detach_fails_nothing_after_remove(
    pytester: pytest.Pytester, site: Path
) -> None:
    result = run_kit(pytester, "--mmu-driver", "interval-mirror-keeps-ranges", "-k", "interval")
    assert result.ret == 1, result.stdout.str()
    line = failed(result, "test_interval_nothing_after_remove", "interval-mirror-keeps-ranges")
    assert line, result.stdout.str()
    assert "detach must remove every interval subscription" in result.stdout.str()
