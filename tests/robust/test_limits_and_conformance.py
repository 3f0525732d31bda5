"""The schema's limits are ones the run handles; ``conformance`` loads no code from the current directory.

(issue 16, items 2 and 8)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmu_notifier.workload import model, runner


def _at_the_limit() -> model.Workload:
    return model.parse({
        "name": "limit",
        "processes": [{
            "name": "p",
            "count": model.MAX_PROCESSES,
            "steps": [{"op": "mmap"}, {"op": "touch", "write": True}, {"op": "attach"}, {"op": "access"},
                      {"op": "detach"}, {"op": "exit"}],
        }],
        "background": {"reclaim": 10},
    })


def test_the_limits_are_field_level_errors() -> None:
    over = {"processes": [{"name": "p", "count": model.MAX_PROCESSES + 1, "steps": [{"op": "mmap"}]}]}
    limit = rf"processes\.0\.count: .*less than or equal to {model.MAX_PROCESSES}"
    with pytest.raises(model.WorkloadError, match=limit):
        model.parse(over)
    with pytest.raises(model.WorkloadError, match=r"background\.migrate: .*1000000"):
        model.parse({"processes": [{"name": "p", "steps": [{"op": "mmap"}]}], "background": {"migrate": 2e9}})
    steps = [{"op": "mmap"}] * 10_000
    with pytest.raises(model.WorkloadError, match="steps in all"):
        model.parse({"processes": [{"name": "p", "count": 60, "repeat": 10, "steps": steps}]})


@pytest.mark.slow
@pytest.mark.parametrize("threads", [None, 8], ids=["deterministic", "threads8"])
def test_the_run_handles_the_most_processes_the_schema_accepts(threads: int | None) -> None:
    workload = _at_the_limit()
    result = runner.run(workload, 0, threads, record=False)  # as the CLI runs it: no timeline of 10,000 processes
    assert result.ok, result.violations
    assert result.steps >= model.MAX_PROCESSES * 6
    for stats in result.drivers.values():
        assert stats.allocated == stats.freed


def _conformance(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmu_notifier.conformance", "-k", "test_driver_loads", "-q", *argv],
        cwd=cwd, capture_output=True, text=True, check=False, timeout=300,
    )


def test_conformance_does_not_load_a_conftest_from_the_current_directory(tmp_path: Path) -> None:
    marker = tmp_path / "conftest-ran"
    (tmp_path / "conftest.py").write_text(f"open({str(marker)!r}, 'w').write('yes')\n")
    done = _conformance(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not marker.exists()
