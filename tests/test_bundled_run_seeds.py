"""The main job over every bundled driver is clean at many seeds (not only the default one).

A seed sweep of the built-in workload with the bundled plugins installed: each
seed is a different interleaving of the same processes, so a driver model or
exerciser that breaks a kernel rule only in some orders shows here. It found
gru's detach unmapping an exited process's mm without an ``mm_users``
reference (seed 1: rdma_odp's ``umem_rwsem`` read lock never saw its end).
"""

from __future__ import annotations

import pytest

from mmu_notifier import plugins
from mmu_notifier.workload import runner
from mmu_notifier.workload.default import DEFAULT

BUNDLED = {"amdkfd", "gntdev", "gru", "hmm", "radeon", "rdma_odp"}


@pytest.fixture(scope="module", autouse=True)
def bundled_installed() -> None:
    installed = {ep.name for ep in plugins.available_drivers()}
    missing = BUNDLED - installed
    assert not missing, f"bundled plugins not installed: {sorted(missing)} (run ./scripts/test)"


def check(seed: int) -> None:
    result = runner.run_deterministic(DEFAULT, seed, record=False)
    assert result.ok, (seed, result.violations, {n: s.violations for n, s in result.drivers.items() if s.violations})
    assert set(result.drivers) >= BUNDLED
    for name, stats in result.drivers.items():
        assert stats.allocated == stats.freed, (seed, name)


@pytest.mark.parametrize("seed", range(8))
def test_the_default_workload_is_clean_at_seed(seed: int) -> None:
    check(seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8, 100))
def test_the_default_workload_is_clean_at_many_seeds(seed: int) -> None:
    check(seed)
