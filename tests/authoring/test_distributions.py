"""Every distribution of the repository builds, passes ``twine check``, and works installed from its wheel.

The distributions are found, not listed: the core, every ``plugins/*/`` and
every ``examples/*/`` with a ``pyproject.toml``, so a new plugin is covered
the day it lands. All tests here are slow (they build with the isolated
standard front-end, ``python -m build``).
"""

from __future__ import annotations

import email
import json
import re
import subprocess
import sys
import zipfile
from email.message import Message
from pathlib import Path

import pytest
from freshenv import REPO, FreshEnv, build, distribution_dirs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, list[Path]]:
    """Source directory -> its sdist and wheel (the wheel built from the sdist, as ``build`` does by default)."""
    outdir = tmp_path_factory.mktemp("dist")
    return {source: build(source, outdir) for source in distribution_dirs()}


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


def _entry_points(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        found = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        return archive.read(found[0]).decode() if found else ""


def _wheel(files: list[Path]) -> Path:
    (wheel,) = [f for f in files if f.suffix == ".whl"]
    return wheel


def test_every_distribution_builds_an_sdist_and_a_wheel(dists: dict[Path, list[Path]]) -> None:
    assert REPO in dists and len(dists) >= 2
    for source, files in dists.items():
        kinds = sorted(f.name.rsplit(".", 2)[-2] + "." + f.suffix[1:] if f.suffix == ".gz" else f.suffix[1:]
                       for f in files)
        assert kinds == ["tar.gz", "whl"], (source, files)


def test_twine_check_passes_on_every_file(dists: dict[Path, list[Path]]) -> None:
    files = [str(f) for group in dists.values() for f in group]
    run = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *files],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("PASSED") == len(files), run.stdout


def test_the_metadata_is_complete(dists: dict[Path, list[Path]]) -> None:
    for source, files in dists.items():
        meta = _metadata(_wheel(files))
        where = f"{source.relative_to(REPO) if source != REPO else 'core'}"
        assert meta["Requires-Python"] == ">=3.11", where
        assert meta["Description-Content-Type"] == "text/markdown", where
        assert len(meta.get_payload() or "") > 200, f"{where}: the README is not the long description"
        classifiers = meta.get_all("Classifier") or []
        assert "Programming Language :: Python :: 3.11" in classifiers, where
        assert "Typing :: Typed" in classifiers, where
        assert meta["License-Expression"] == "MIT", where
        if source == REPO:
            continue
        core = [r for r in meta.get_all("Requires-Dist") or [] if r.replace("_", "-").startswith("mmu-notifier")]
        assert len(core) == 1 and ">=" in core[0] and "<" in core[0].replace("<=", ""), (
            f"{where}: a plugin names the core version range it needs (mmu-notifier>=0.1,<0.2), got {core}"
        )
        assert "[mmu_notifier.drivers]" in _entry_points(_wheel(files)), where


def test_the_wheels_alone_install_list_their_drivers_and_pass_the_kit(
    dists: dict[Path, list[Path]], fresh_env: FreshEnv, tmp_path: Path
) -> None:
    """Installed from the built wheels (not the source trees) into a fresh environment."""
    fresh_env.pip_install(*[_wheel(files) for files in dists.values()])
    installed = fresh_env.distributions()
    assert len(installed) == len(dists), installed
    drivers = fresh_env.run("mmu-notifier", "drivers", "--json", cwd=tmp_path)
    assert drivers.returncode == 0, drivers.stdout + drivers.stderr
    listed = json.loads(drivers.stdout)
    assert len(listed) == len(dists) - 1 and all(d["config"] == "valid" for d in listed), drivers
    where = fresh_env.run_python("-c", "import mmu_notifier; print(mmu_notifier.__file__)", cwd=tmp_path)
    assert str(fresh_env.root) in where.stdout, f"the core was imported from {where.stdout}, not the fresh wheel"
    # the whole kit with its default knobs: lighter ones would miss the races a plugin declares as known
    # kernel failures (strict xfails), and the run would fail for the wrong reason
    kit = fresh_env.run_python("-m", "mmu_notifier.conformance", cwd=tmp_path, timeout=1800)
    assert kit.returncode == 0 and not re.search(r"\b\d+ (failed|error)", kit.stdout), kit.stdout[-6000:]
    header = next(line for line in kit.stdout.splitlines() if "conformance kit: installed drivers" in line)
    assert all(f"{d['name']} (mmu-notifier-" in header for d in listed), header
