"""``mmu-notifier new-plugin``: the names it accepts, what it refuses, and that what it writes works.

The slow test is the author's whole path: generate a plugin in a temporary
directory, build it and the core with the standard front-end, install both
(and nothing else of this repository) into a fresh environment, and run the
conformance kit and the plugin's own tests there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from freshenv import FreshEnv, build

from mmu_notifier import __version__, cli, scaffold
from mmu_notifier.errors import UsageError


def _new(tmp_path: Path, name: str = "my_gpu") -> Path:
    target = tmp_path / name
    assert cli.main(["new-plugin", name, "--dir", str(target)]) == 0
    return target


def _fake_install(plugin: Path, name: str) -> None:
    """Make ``plugin`` findable on PYTHONPATH with its entry point, as an install would (a dist-info, no copy)."""
    names = scaffold.check_name(name)
    info = plugin / f"{names.package}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {names.distribution}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        f"[mmu_notifier.drivers]\n{name} = {names.package}:{names.cls}Driver\n"
    )


@pytest.mark.parametrize("name", ["", "My_gpu", "my-gpu", "9gpu", "_gpu", "gpu_", "my__gpu", "class", "a" * 33])
def test_a_bad_name_is_refused_with_one_line_and_exit_2(name: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["new-plugin", name, "--dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a driver name" in err and repr(name) in err
    assert not (tmp_path / "out").exists()


def test_an_existing_directory_is_refused_and_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    assert cli.main(["new-plugin", "gpu", "--dir", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{target} already exists" in err
    assert [p.name for p in target.iterdir()] == ["mine.txt"]


def test_the_default_directory_is_the_distribution_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["new-plugin", "my_gpu"]) == 0
    assert (tmp_path / "mmu-notifier-my-gpu" / "mmu_notifier_my_gpu" / "__init__.py").is_file()


def test_the_plugin_has_the_common_shape_and_every_placeholder_is_filled(tmp_path: Path) -> None:
    target = _new(tmp_path)
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert files == sorted([
        "README.md", "pyproject.toml",
        "mmu_notifier_my_gpu/__init__.py", "mmu_notifier_my_gpu/config.py", "mmu_notifier_my_gpu/my_gpu_mm.py",
        "mmu_notifier_my_gpu/device.py", "mmu_notifier_my_gpu/legacy.py", "mmu_notifier_my_gpu/exerciser.py",
        "mmu_notifier_my_gpu/scenarios.py", "mmu_notifier_my_gpu/py.typed",
        "tests/test_my_gpu_driver.py", "tests/test_my_gpu_conformance.py", "tests/test_my_gpu_scenarios.py",
    ])
    for path in target.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "${" not in text, path
            if path.suffix == ".py":
                compile(text, str(path), "exec")
    project = tomllib.loads((target / "pyproject.toml").read_text())["project"]
    assert project["name"] == "mmu-notifier-my-gpu"
    assert project["entry-points"]["mmu_notifier.drivers"] == {"my_gpu": "mmu_notifier_my_gpu:MyGpuDriver"}
    assert project["dependencies"] == [scaffold.core_requirement(__version__)]
    assert project["requires-python"] == ">=3.11"


def test_the_core_requirement_pins_the_minor_series_before_1_0() -> None:
    assert scaffold.core_requirement("0.1.0") == "mmu-notifier>=0.1,<0.2"
    assert scaffold.core_requirement("0.12.3.dev1") == "mmu-notifier>=0.12,<0.13"
    assert scaffold.core_requirement("1.4.2") == "mmu-notifier>=1.4,<2"


def test_new_plugin_raises_a_usage_error_before_writing(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a driver name"):
        scaffold.new_plugin("Bad", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_the_generated_unit_tests_pass_as_generated(tmp_path: Path) -> None:
    """The plugin's own unit tests, with the plugin on PYTHONPATH (the slow test installs it for real)."""
    target = _new(tmp_path, "scaffolded")
    _fake_install(target, "scaffolded")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
                          "not conformance_kit and not is_clean", str(target / "tests")],
                         cwd=target, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout


@pytest.mark.slow
def test_a_generated_plugin_installs_alone_with_the_core_and_passes_the_kit(
    tmp_path: Path, core_wheel: Path, fresh_env: FreshEnv
) -> None:
    target = _new(tmp_path, "fresh_gpu")
    (wheel,) = build(target, tmp_path / "dist", "--wheel")
    fresh_env.pip_install(core_wheel, wheel)
    assert fresh_env.distributions() == ["mmu-notifier", "mmu-notifier-fresh-gpu"]
    drivers = fresh_env.run("mmu-notifier", "drivers", "--json")
    assert drivers.returncode == 0, drivers
    assert [(d["name"], d["version"], d["config"]) for d in json.loads(drivers.stdout)] == [
        ("fresh_gpu", "0.1.0", "valid")
    ], drivers
    kit = fresh_env.run_python("-m", "mmu_notifier.conformance", "fresh_gpu", "-q", cwd=tmp_path)
    assert kit.returncode == 0 and " passed" in kit.stdout and "failed" not in kit.stdout, kit.stdout[-5000:]
    own = fresh_env.run_python("-m", "pytest", "-q", "-p", "no:cacheprovider", str(target / "tests"), cwd=target)
    assert own.returncode == 0 and "skipped" not in own.stdout, own.stdout[-5000:] + own.stderr[-2000:]
