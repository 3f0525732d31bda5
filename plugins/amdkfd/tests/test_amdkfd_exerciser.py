"""The conformance exerciser, the conformance kit on amdkfd, and the main job's legacy workload."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mmu_notifier.exerciser import DETACH_BY_EXIT, RELEASE, Exerciser
from mmu_notifier.workload.model import load
from mmu_notifier.workload.runner import run_deterministic
from mmu_notifier_amdkfd import KfdDriver

LEGACY_WORKLOAD = Path(__file__).parents[1] / "examples" / "legacy-late-failure.toml"


def test_the_hook_returns_an_exerciser_of_the_declared_capabilities(machine: Callable[..., Any]) -> None:
    m = machine()
    exerciser = m.kernel.drivers.ops_of(m.driver).exerciser(m.kernel)
    assert isinstance(exerciser, Exerciser)
    assert exerciser.driver == "amdkfd"
    assert exerciser.capabilities == KfdDriver.capabilities == {RELEASE, DETACH_BY_EXIT}


def test_attach_is_open_detach_is_nothing_and_exit_tears_down(machine: Callable[..., Any]) -> None:
    m = machine(gpus=2)
    mm, address = m.mm(pages=2)
    exerciser = m.kernel.drivers.ops_of(m.driver).exerciser(m.kernel)
    first, second = exerciser.attach(mm), exerciser.attach(mm)
    assert first.subscription is second.subscription and first.subscription.users == 1
    exerciser.map_range(first, address, address + mm.page_size)
    exerciser.map_range(first, address + mm.page_size, address + 2 * mm.page_size)
    process = first.state
    assert [len(pdd.queues) for pdd in process.pdds] == [1, 1]  # queues take turns over the GPUs
    pfn = exerciser.access(first, address, write=True)
    assert pfn is not None and exerciser.translations(mm) == {address >> mm.page_shift: pfn}
    exerciser.detach(first)
    exerciser.detach(second)
    assert first.subscription.linked  # DETACH_BY_EXIT: the process lives until the mm goes
    mm.exit()
    assert exerciser.translations(mm) == {} and exerciser.access(first, address) is None
    exerciser.unload()
    m.assert_clean()


def _kit(scheme: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MMU_NOTIFIER_AMDKFD__SCHEME": scheme}
    return subprocess.run(
        [sys.executable, "-m", "mmu_notifier.conformance", "amdkfd", "-q"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )


def test_the_conformance_kit_passes_for_amdkfd() -> None:
    result = _kit("5.4")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_conformance_kit_passes_for_the_get_scheme() -> None:
    result = _kit("get")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_legacy_scheme_fails_the_kit_where_5_3_bypassed_free_notifier() -> None:
    result = _kit("legacy")
    # "FAILED path::test_id - reason": the reason is shown only on wide terminals
    failed = sorted(
        line.split("::")[1].split(" ")[0] for line in result.stdout.splitlines() if line.startswith("FAILED")
    )
    assert failed == ["test_alloc_free_paired[amdkfd]", "test_detach_after_exit_frees_once[amdkfd]"]


def test_the_legacy_workload_reports_the_use_after_free() -> None:
    workload = load(LEGACY_WORKLOAD)
    result = run_deterministic(workload, workload.seed)
    assert not result.ok
    filed = result.drivers["amdkfd"].violations  # the finding points at amdkfd's code: filed under it
    assert any(v.startswith("use-after-free in thread kswapd") and "free_process" in v for v in filed)


@pytest.mark.slow
def test_the_legacy_workload_finds_the_race_under_other_seeds_too() -> None:
    workload = load(LEGACY_WORKLOAD)
    hits = [seed for seed in range(1, 9) if not run_deterministic(workload, seed).ok]
    assert hits, "no seed of 1..8 reported the use-after-free"
