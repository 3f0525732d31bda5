"""``mmu-notifier run`` catches what the kit catches: each deliberately broken gntdev copy fails the main job.

The broken copies (``broken_gntdev.py`` beside this file) are installed under
their own entry-point names, as the kit's acceptance tests do, and the built-in
workload runs over each alone in a fresh interpreter. Coherence is checked at
every quiescent point of each mm during the run, so a driver that keeps a
stale translation, or records a mapping without checking its sequence count,
fails although every translation is gone by the end; a driver whose end
never undoes its start (its device accesses are refused for ever) fails
because accesses are refused at quiescent points, where every invalidation
had ended. Each violation is filed under the driver and a next step is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmu_notifier.workload.default import DEFAULT

HERE = Path(__file__).resolve().parent
EXAMPLE_SRC = HERE.parents[1] / "examples" / "gntdev" / "src"

BROKEN = {
    "gntdev-free-twice": ("FreeTwice", "use-after-free"),
    "gntdev-skip-end": ("SkipEnd", "although every invalidation of it had ended"),
    "gntdev-sleeps": ("SleepsInNonblock", "SleepInAtomicError"),
    "gntdev-stale": ("KeepsStale", "[coherence]"),
    "gntdev-no-retry": ("NoRetry", "[coherence]"),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    dist = root / "mmu_notifier_broken_gntdev-0.1.0.dist-info"
    dist.mkdir()
    shutil.copy(HERE / "broken_gntdev.py", root / "broken_gntdev.py")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mmu-notifier-broken-gntdev\nVersion: 0.1.0\n")
    lines = "".join(f"{name} = broken_gntdev:{cls}\n" for name, (cls, _) in BROKEN.items())
    (dist / "entry_points.txt").write_text(f"[mmu_notifier.drivers]\n{lines}")
    return root


def run(site: Path, driver: str, *extra: str) -> subprocess.CompletedProcess[str]:
    workload = site / f"{driver}.yaml"  # YAML reads JSON
    workload.write_text(json.dumps(DEFAULT.model_copy(update={"drivers": [driver]}).model_dump(mode="json")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), str(EXAMPLE_SRC),
                                                                    os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "mmu_notifier.cli", "run", str(workload), *extra],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.mark.parametrize("driver", sorted(BROKEN))
def test_run_fails_each_broken_copy_and_files_it_under_the_driver(site: Path, driver: str) -> None:
    done = run(site, driver)
    assert done.returncode == 1, done.stdout + done.stderr
    expected = BROKEN[driver][1]
    assert f"  - {driver}: " in done.stdout and expected in done.stdout, done.stdout
    assert f"next: mmu-notifier conformance {driver}" in done.stdout
    doc = json.loads(run(site, driver, "--json").stdout)
    assert doc["drivers"][driver]["violations"]  # the table's column counts them for the driver


def test_stale_translations_are_caught_while_the_run_goes_on(site: Path) -> None:
    done = run(site, "gntdev-stale")
    assert "(seen at quiescent point" in done.stdout  # not only after unload, when nothing is translated


def test_a_stuck_device_is_judged_at_quiescent_points_and_filed_as_pairing(site: Path) -> None:
    done = run(site, "gntdev-skip-end")
    lines = [line for line in done.stdout.splitlines() if line.startswith("  - gntdev-skip-end: ")]
    assert len(lines) == 1, done.stdout  # filed once, not once per refused access
    assert "[start-end-pairing]" in lines[0] and "(seen at quiescent point" in lines[0]
