"""Acceptance of the conformance kit: it catches each deliberately broken copy of the example plugin.

Each broken copy (``broken_gntdev.py`` beside this file) is the example gntdev
driver with one bug: free twice, skip the end, sleep in a non-blockable range,
keep a stale translation after an invalidation (the four of the issue), and
record a mapping that raced an invalidation (caught only by a PCT race). A
test installs it under its own entry-point name (a generated ``.dist-info``
on ``PYTHONPATH``), runs the kit on it in a fresh
interpreter with pytester, and asserts that the check named for the bug
failed, with the message that explains it. A plugin that cannot even be
imported must fail every check under its own name, none skipped or passed.
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

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_SRC = REPO / "examples" / "gntdev" / "src"

ENTRY_POINTS = {
    "gntdev-free-twice": "broken_gntdev:FreeTwice",
    "gntdev-skip-end": "broken_gntdev:SkipEnd",
    "gntdev-sleeps": "broken_gntdev:SleepsInNonblock",
    "gntdev-stale": "broken_gntdev:KeepsStale",
    "gntdev-broken-import": "broken_import:Driver",
    "gntdev-bad-hook": "broken_gntdev:BadHook",
    "gntdev-bad-config": "broken_gntdev:BadDefaultConfig",
    "gntdev-no-retry": "broken_gntdev:NoRetry",
}


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Untruncated summary lines in the kit's output."""
    monkeypatch.setenv("COLUMNS", "1000")


@pytest.fixture
def site(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on PYTHONPATH holding the broken plugins and the distribution metadata that registers them."""
    root = pytester.path / "site"
    dist = root / "mmu_notifier_broken_gntdev-0.1.0.dist-info"
    dist.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("broken_gntdev.py"), root / "broken_gntdev.py")
    (root / "broken_import.py").write_text("import mmu_notifier_no_such_module  # the plugin's import fails\n")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mmu-notifier-broken-gntdev\nVersion: 0.1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in ENTRY_POINTS.items())
    (dist / "entry_points.txt").write_text(f"[mmu_notifier.drivers]\n{lines}")
    path = [str(root), str(EXAMPLE_SRC), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))
    return root


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


BUGS = [
    pytest.param("gntdev-free-twice", "test_alloc_free_paired", "freed twice", id="free-twice"),
    pytest.param("gntdev-skip-end", "test_start_end_pairing", "did not undo", id="skip-end"),
    pytest.param("gntdev-sleeps", "test_nonblockable_never_sleeps", "slept", id="sleep-in-nonblock"),
    pytest.param("gntdev-stale", "test_coherence", "stale translation", id="stale-translation"),
    pytest.param("gntdev-no-retry", "test_race_invalidation_vs_access", "stale translation", id="mapping-race"),
]


@pytest.mark.parametrize(("driver", "check", "explanation"), BUGS)
def test_conformance_catches_the_broken_copy(
    pytester: pytest.Pytester, site: Path, driver: str, check: str, explanation: str
) -> None:
    """The kit (without its slow state machine) fails the named check of each broken copy, saying why."""
    result = run_kit(pytester, "--mmu-driver", driver, "-k", "not test_state_machine")
    assert result.ret == 1, result.stdout.str()
    line = failed(result, check, driver)
    assert line, f"{check}[{driver}] did not fail:\n{result.stdout.str()}"
    assert explanation in result.stdout.str(), result.stdout.str()
    assert failed(result, "test_driver_loads", driver) == ""  # the copy itself loads fine: it is its behaviour


@pytest.mark.parametrize(
    ("driver", "reason"),
    [
        pytest.param("gntdev-broken-import", "import failed: ModuleNotFoundError", id="import-error"),
        pytest.param("gntdev-bad-hook", "implements unknown hook(s) ['invalidate_range_begin']", id="bad-hook"),
        pytest.param("gntdev-bad-config", "invalid config: field 'domain'", id="bad-default-config"),
    ],
)
def test_conformance_broken_driver_fails_loudly_by_name(
    pytester: pytest.Pytester, site: Path, driver: str, reason: str
) -> None:
    """An installed driver that cannot load fails under its own name, with the reason; nothing is skipped."""
    result = run_kit(pytester, "--mmu-driver", driver, "-k", "not test_state_machine and not race")
    assert result.ret == 1
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) == 0, outcomes
    line = failed(result, "test_driver_loads", driver)
    assert reason in line, line
    for check in ("test_alloc_free_paired", "test_coherence", "test_exit_coherence"):
        assert failed(result, check, driver), f"{check}[{driver}] did not fail"
    if driver == "gntdev-broken-import":  # not even the metadata checks can pass
        assert outcomes.get("passed", 0) == 0, outcomes
        assert failed(result, "test_import_is_quiet", driver)
    if driver == "gntdev-bad-config":
        assert failed(result, "test_default_config_valid", driver)


def test_conformance_driver_not_installed_fails(pytester: pytest.Pytester) -> None:
    """Naming a driver that is not installed fails, by that name; it is not an empty (skipped) run."""
    result = run_kit(pytester, "--mmu-driver", "no-such-driver", "-k", "loads or entry_point")
    assert result.ret == 1
    assert "is not installed" in result.stdout.str()
    assert failed(result, "test_driver_loads", "no-such-driver")


@pytest.mark.slow
def test_conformance_state_machine_catches_a_stale_translation(pytester: pytest.Pytester, site: Path) -> None:
    """The state machine alone finds the stale translation too (and shrinks it to a short example)."""
    result = run_kit(pytester, "--mmu-driver", "gntdev-stale", "-k", "test_state_machine")
    assert failed(result, "test_state_machine", "gntdev-stale"), result.stdout.str()
    assert "stale translation" in result.stdout.str()


def test_conformance_example_passes_the_whole_kit(pytester: pytest.Pytester, site: Path) -> None:
    """The example plugin, unbroken, passes every check (it is on PYTHONPATH under its real name here)."""
    dist = pytester.path / "site" / "mmu_notifier_gntdev_example-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mmu-notifier-gntdev-example\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[mmu_notifier.drivers]\ngntdev-example = example_gntdev:Example\n")
    (pytester.path / "site" / "example_gntdev.py").write_text(
        "from mmu_notifier_gntdev import GntdevDriver\n\n\n"
        "class Example(GntdevDriver):\n    name = 'gntdev-example'\n"
    )
    result = run_kit(pytester, "--mmu-driver", "gntdev-example")
    assert result.ret == 0, result.stdout.str()
    outcomes = result.parseoutcomes()
    # the only skips: the interval-notifier checks, which a 5.4 driver rules out by not declaring "interval"
    interval_checks = [name for name in CHECKS if name.startswith("test_interval_")]
    skips = [line for line in result.outlines if line.startswith("SKIPPED")]
    assert outcomes.get("skipped", 0) == len(interval_checks), outcomes
    assert len(skips) == 1 and f"SKIPPED [{len(interval_checks)}]" in skips[0], skips  # one reason for all
    assert "does not declare the capability 'interval'" in skips[0], skips
    assert outcomes["passed"] >= 27, outcomes


def test_conformance_plugin_is_inert_elsewhere(pytester: pytest.Pytester) -> None:
    """In a session that does not run the kit the plugin adds options and nothing else."""
    pytester.makepyfile(test_unrelated="def test_nothing_to_see():\n    pass\n")
    args = ["-p", "no:cacheprovider"] + ([] if plugin_autoloaded() else ["-p", PLUGIN])
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    assert "conformance kit" not in result.stdout.str()
    assert "--mmu-driver" in pytester.runpytest_subprocess(*args, "--help").stdout.str()
