"""The conformance kit on radeon: 5.4 passes except the checks the kernel itself fails (declared, with the reason).

The kit marks each declared check as a strict expected failure: it must
fail, and fails the run if it passes unexpectedly; every other check must pass.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mmu_notifier_radeon.exerciser import CS_RACE, RELEASE_FLAGS_0

KIT = [sys.executable, "-m", "pytest", "--pyargs", "mmu_notifier.conformance", "--mmu-driver", "radeon", "-q",
       "-rxX", "-p", "no:cacheprovider"]


def _kit(*args: str, env: dict[str, str] | None = None, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code, *KIT[3:], *args] if code else [*KIT, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, **(env or {})})


def test_5_4_passes_the_kit_except_the_known_kernel_failures() -> None:
    run = _kit()
    out = run.stdout
    assert run.returncode == 0, out[-5000:] + run.stderr[-2000:]
    assert "5 xfailed" in out and "failed" not in out.replace("xfailed", "")
    for check in ("test_exit_coherence", "test_release_once_on_exit", "test_detach_after_exit_frees_once",
                  "test_state_machine"):
        assert f"::{check}[radeon] - known kernel behaviour of radeon: {RELEASE_FLAGS_0[:40]}" in out
    assert f"::test_race_invalidation_vs_access[radeon] - known kernel behaviour of radeon: {CS_RACE[:40]}" in out


@pytest.mark.slow
def test_5_5_release_leaves_only_the_cs_race() -> None:
    run = _kit(env={"MMU_NOTIFIER_RADEON__RELEASE_BLOCKABLE": "true"})
    out = run.stdout
    assert run.returncode == 0, out[-5000:]
    assert "1 xfailed" in out and "test_race_invalidation_vs_access[radeon]" in out


STALE = """
import sys
import pytest
from mmu_notifier_radeon import exerciser

init = exerciser.RadeonExerciser.__init__

def declare_too_much(self, module):
    init(self, module)
    self.known_kernel_failures["test_no_leak"] = "a stale declaration: the kernel passes this check"

exerciser.RadeonExerciser.__init__ = declare_too_much
sys.exit(pytest.main(sys.argv[1:]))
"""


def test_a_declared_failure_that_passes_fails_the_kit() -> None:
    run = _kit("-k", "test_no_leak or test_exit_coherence", code=STALE)
    out = run.stdout
    assert run.returncode == 1, out[-5000:]
    assert "XPASS(strict)" in out and "test_no_leak[radeon]" in out
    assert "1 xfailed" in out  # test_exit_coherence still fails as declared
