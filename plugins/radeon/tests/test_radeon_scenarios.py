"""Each bug of issue 14 is found by its named check; each fixed form is clean under bounded exhaustive DFS."""

from __future__ import annotations

import pytest

from mmu_notifier.explore import explore
from mmu_notifier.plugins import available_drivers
from mmu_notifier_radeon.scenarios import SCENARIOS

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}

FOUND = [
    ("radeon-5.3-exit-with-bound-bo", "invariant", "[exit-coherence]"),
    ("radeon-5.4-exit-with-bound-bo", "invariant", "[exit-coherence]"),
    ("radeon-unguarded-free", "exception", "NULL pointer dereference"),
    ("radeon-5.3-unload-with-empty-radeon-mn", "use-after-free", "called after module 'radeon' was unloaded"),
    ("radeon-5.4-register-failure-leak", "leak", "radeon_mn of mm 1"),
    ("radeon-5.3-destroy-vs-release", "use-after-free",
     "work radeon_mn_destroy (inside LegacyRadeonMN) freed while queued"),
    ("radeon-cs-vs-madvise", "invariant", "[coherence] stale GTT translation"),
]
CLEAN = ["radeon-release-blockable-exit-with-bound-bo", "radeon-guarded-free", "radeon-cs-vs-munmap",
         "radeon-unload-after-last-close", "radeon-exit-after-last-close"]
#: clean forms whose exhaustive search takes seconds
CLEAN_SLOW = ["radeon-register-failure-put"]


def test_scenarios_are_registered_through_the_hook() -> None:
    assert any(ep.name == "radeon" for ep in available_drivers())
    from mmu_notifier.scenarios import scenarios

    known = scenarios(plugins=True)
    assert set(BY_NAME) <= set(known)
    for name, expect, _ in FOUND:
        assert known[name].expect == expect
    for name in CLEAN + CLEAN_SLOW:
        assert known[name].expect is None


@pytest.mark.parametrize(("name", "kind", "message"), FOUND, ids=[f[0] for f in FOUND])
def test_bug_found_by_its_check(name: str, kind: str, message: str) -> None:
    result = explore(BY_NAME[name], strategy="dfs", preemptions=2, budget=2000, minimise_budget=0, reproduce=1)
    assert result.bugs, f"{name}: nothing found in {result.stats.schedules} schedules"
    bug = result.bugs[0]
    assert bug.problem.kind.value == kind and message in bug.problem.message
    assert bug.reproduced == (1, 1)


@pytest.mark.parametrize("name", CLEAN)
def test_fixed_form_clean_under_exhaustive_dfs(name: str) -> None:
    result = explore(BY_NAME[name], strategy="dfs", preemptions=2, budget=100_000)
    assert not result.findings, result.text()
    assert result.complete and result.stats.schedules > 1


@pytest.mark.slow
@pytest.mark.parametrize("name", CLEAN_SLOW)
def test_slow_fixed_form_clean_under_exhaustive_dfs(name: str) -> None:
    test_fixed_form_clean_under_exhaustive_dfs(name)


@pytest.mark.parametrize("name", CLEAN_SLOW)
def test_slow_fixed_form_clean_under_pct(name: str) -> None:
    result = explore(BY_NAME[name], strategy="pct", budget=200, seed=0)
    assert not result.findings, result.text()


@pytest.mark.slow
@pytest.mark.parametrize("name", CLEAN)
def test_fixed_form_clean_with_three_preemptions(name: str) -> None:
    result = explore(BY_NAME[name], strategy="dfs", preemptions=3, budget=200_000)
    assert not result.findings, result.text()
    assert result.complete
