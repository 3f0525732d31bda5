"""Broken plugins never take the CLI down, and never get another driver blamed (issue 16, items 3-5).

The broken plugins are tiny distributions written by :mod:`broken_plugins` into
a temporary directory that is put on ``sys.path`` (``PYTHONPATH`` for the
subprocess tests), so ``importlib.metadata`` finds them next to the installed
plugins; every command then has to list or leave out the broken ones and give
complete results for the healthy ones.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from broken_plugins import BROKEN, UNLOADABLE, install

from mmu_notifier import plugins
from mmu_notifier.cli import main
from mmu_notifier.workload import model, runner

TINY = """
name = "tiny"
[[processes]]
name = "p"
count = 2
steps = [
  {op = "mmap", pages = 2}, {op = "touch", write = true}, {op = "attach"}, {op = "map"},
  {op = "access"}, {op = "munmap"}, {op = "mmap"}, {op = "touch"}, {op = "detach"},
]
"""

REASONS = {
    "rb_import": "import failed: ImportError: rb_import needs libdevice",
    "rb_exit": "called sys.exit(3) while being imported",
    "rb_sig": "bad hook",
    "rb_cfg": "not a pydantic model",
    "rb_default": "invalid default: field 'queues' = 0",
}


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test plugins on ``sys.path``, found through their ``.dist-info`` entry points; only they are
    visible (the installed plugins are left aside, so these tests do not depend on their health)."""
    directory = install(tmp_path / "site", ["rb_good", *BROKEN])
    monkeypatch.syspath_prepend(str(directory))
    importlib.invalidate_caches()
    found = [ep for ep in plugins.available_drivers() if ep.name.startswith("rb_")]
    assert sorted(ep.name for ep in found) == sorted(["rb_good", *BROKEN])
    assert all(ep.dist is not None and ep.dist.name.startswith("rb-") for ep in found)
    monkeypatch.setattr(plugins, "available_drivers", lambda: found)
    return directory


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def healthy() -> list[str]:
    return [ep.name for ep in plugins.available_drivers() if ep.name not in (*UNLOADABLE, "rb_alloc", "rb_start")]


def no_traceback(text: str) -> bool:
    return "Traceback" not in text


def test_drivers_lists_each_broken_plugin_with_its_reason(plugin_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drivers", "--json"]) == 1
    captured = capsys.readouterr()
    rows = {row["name"]: row for row in json.loads(captured.out)}
    for name, reason in REASONS.items():
        assert rows[name]["status"] == "broken" and reason in rows[name]["reason"], rows[name]
        assert "\n" not in rows[name]["reason"]
    for name in ("rb_good", "rb_alloc", "rb_start"):  # these load: they misbehave only when run
        assert rows[name]["status"] == "ok"
    assert no_traceback(captured.err)


def test_drivers_text_names_broken_plugins(plugin_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drivers"]) == 1
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(REASONS) <= set(lines) and all("BROKEN" in lines[name] for name in REASONS)
    assert "BROKEN" not in lines["rb_good"]


@pytest.mark.parametrize("name", ["rb_import", "rb_exit", "rb_cfg"])
def test_schema_of_a_broken_plugin_is_one_line(plugin_dir: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    assert main(["drivers", "--schema", name]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and name in err and "broken" in err and no_traceback(err)


@pytest.mark.parametrize("threads", [None, 2], ids=["deterministic", "threads"])
def test_run_leaves_broken_plugins_out_and_blames_only_the_faulty_drivers(
    plugin_dir: Path, tiny: Path, capsys: pytest.CaptureFixture[str], threads: int | None
) -> None:
    argv = ["run", str(tiny), "--json"] + ([] if threads is None else ["--threads", str(threads)])
    assert main(argv) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert set(doc["left_out"]) == set(UNLOADABLE)
    for name, reason in REASONS.items():
        assert reason in doc["left_out"][name]
        assert f"driver {name!r} left out" in captured.err
    drivers = doc["drivers"]
    # the faulty ones: their faults are their violations, with the traceback of the raise
    assert any("alloc_notifier (during attach) raised RuntimeError: rb_alloc: alloc boom" in v
               for v in drivers["rb_alloc"]["violations"])
    first = drivers["rb_alloc"]["tracebacks"][0]
    assert "alloc boom" in first and "rb_alloc.py" in first
    assert drivers["rb_alloc"]["allocated"] == 0 and drivers["rb_alloc"]["attaches"] == 0
    assert any("invalidate_range_start raised RuntimeError: rb_start: start boom" in v
               for v in drivers["rb_start"]["violations"])
    assert drivers["rb_start"]["allocated"] == drivers["rb_start"]["freed"] > 0  # its teardown still ran
    # every healthy driver ran completely and is blamed for nothing
    for name in healthy():
        stats = drivers[name]
        assert stats["violations"] == [], (name, stats["violations"])
        assert stats["allocated"] == stats["freed"] > 0 and stats["attaches"] == stats["detaches"] == 2
    assert doc["violations"] == []  # nothing unattributed: no frames left, no other driver named
    assert doc["failed_steps"] > 0 and doc["steps"] == 18  # every step of every process ran
    assert no_traceback(captured.err)


def test_explore_list_leaves_broken_plugins_out_and_exits_1(
    plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explore", "--list"]) == 1
    captured = capsys.readouterr()
    assert "patch09-race" in captured.out or len(captured.out.splitlines()) > 3
    for name in UNLOADABLE:
        assert f"driver {name!r} left out" in captured.err
    assert no_traceback(captured.err)


def test_explore_skip_driver_leaves_nothing_out(plugin_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explore", "--list"] + [arg for name in UNLOADABLE for arg in ("--skip-driver", name)]
    assert main(argv) == 0
    assert "left out" not in capsys.readouterr().err


def test_run_driver_selection(plugin_dir: Path, tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tiny), "--json", "--driver", "rb_good"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["drivers"]) == ["rb_good"] and doc["left_out"] == {}
    skips = [arg for name in (*UNLOADABLE, "rb_alloc", "rb_start") for arg in ("--skip-driver", name)]
    assert main(["run", str(tiny), "--json", *skips]) == 0
    assert "rb_alloc" not in json.loads(capsys.readouterr().out)["drivers"]
    assert main(["run", str(tiny), "--driver", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "--driver nosuch" in err and err.count("\n") == 1


def test_sys_exit_at_import_does_not_end_the_command(plugin_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # main() returns (it would raise SystemExit(3) if the plugin's exit escaped)
    assert main(["drivers"]) == 1
    assert "rb_exit" in capsys.readouterr().out


def test_hang_is_reported_with_the_partial_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny: Path) -> None:
    directory = install(tmp_path / "hang", ["rb_good", "rb_sleep"])
    monkeypatch.syspath_prepend(str(directory))
    importlib.invalidate_caches()
    sleeper = importlib.import_module("rb_sleep")
    try:
        started = time.monotonic()
        result = runner.run(model.load(tiny).model_copy(update={"drivers": ["rb_good", "rb_sleep"]}), 0,
                            watchdog=0.3)
        assert time.monotonic() - started < 10
        assert result.stopped == "hang" and not result.ok
        assert any("hang: driver 'rb_sleep': invalidate_range_start did not return within 0.3 s" in v
                   for v in result.drivers["rb_sleep"].violations)
        assert result.drivers["rb_good"].violations == []
    finally:
        sleeper.RELEASE.set()  # let the stuck model thread go


def _env(directory: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(directory), os.environ.get("PYTHONPATH", "")])}


def test_cli_hang_exits_1_with_summary(tmp_path: Path, tiny: Path) -> None:
    directory = install(tmp_path / "hang", ["rb_good", "rb_sleep"])
    done = subprocess.run(
        [sys.executable, "-m", "mmu_notifier.cli", "run", str(tiny), "--watchdog", "0.5", "--driver", "rb_good",
         "--driver", "rb_sleep"],
        capture_output=True, text=True, env=_env(directory), timeout=60, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "hang: driver 'rb_sleep': invalidate_range_start" in done.stdout and "STOPPED (hang)" in done.stdout
    assert no_traceback(done.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [[], ["--threads", "2"]], ids=["deterministic", "threads"])
def test_ctrl_c_prints_the_partial_summary_and_exits_130(tmp_path: Path, tiny: Path, threads: list[str]) -> None:
    directory = install(tmp_path / "hang", ["rb_good", "rb_sleep"])
    process = subprocess.Popen(
        [sys.executable, "-m", "mmu_notifier.cli", "run", str(tiny), "--driver", "rb_good", "--driver", "rb_sleep",
         *threads],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(directory),
    )
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted (Ctrl-C)" in out and "STOPPED (interrupted)" in out
    assert no_traceback(err)


@pytest.mark.slow
def test_conformance_hang_names_the_callback(tmp_path: Path) -> None:
    directory = install(tmp_path / "hang", ["rb_sleep"])
    done = subprocess.run(
        [sys.executable, "-m", "mmu_notifier.conformance", "rb_sleep", "--watchdog", "2", "-q"],
        capture_output=True, text=True, env=_env(directory), timeout=300, check=False,
    )
    assert done.returncode == 1
    assert "hang:" in done.stderr and "rb_sleep" in done.stderr and "invalidate_range_start" in done.stderr
