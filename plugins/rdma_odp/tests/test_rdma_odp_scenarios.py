"""Each scenario's expected outcome: the historical bugs are found, their fixed forms are clean.

Buggy forms: a seeded random walk finds the expected kind. Fixed forms:
bounded exhaustive DFS (2 preemptions) runs to completion with no finding;
the longer searches are marked slow, and the default suite runs them under
PCT instead.
"""

from __future__ import annotations

import pytest

from mmu_notifier.explore import Scenario
from mmu_notifier.scenarios import explore, replay, scenarios
from mmu_notifier_rdma_odp.scenarios import SCENARIOS

BUGGY = [s for s in SCENARIOS if s.expect]
SLOW = {"rdma-odp-leaf-free", "rdma-odp-implicit-fault-vs-invalidate", "rdma-odp-implicit-fault-vs-exit",
        "rdma-odp-legacy-implicit-fault-vs-exit"}
CLEAN = [s for s in SCENARIOS if not s.expect and s.name not in SLOW]
CLEAN_SLOW = [s for s in SCENARIOS if s.name in SLOW]


def test_every_bug_has_a_fixed_form_and_the_registry_sees_them() -> None:
    names = {s.name for s in SCENARIOS}
    for bug, fixed in [("nested-vs-dereg", "flat-vs-dereg"), ("oom-reaper-missed-unlock", "oom-reaper"),
                       ("implicit-child-after-exit", "implicit-fault-vs-exit"),
                       ("double-leaf-free", "leaf-free"), ("put-outside-rwsem", "put-under-rwsem")]:
        assert f"rdma-odp-{bug}" in names and f"rdma-odp-{fixed}" in names
    assert "NO KERNEL SHIPPED" in next(s for s in SCENARIOS if s.name == "rdma-odp-put-outside-rwsem").description
    assert names <= set(scenarios(plugins=True))


@pytest.mark.parametrize("scenario", BUGGY, ids=lambda s: s.name)
def test_bug_is_found_and_replays(scenario: Scenario) -> None:
    result = explore(scenario, strategy="random", budget=500, seed=1, reproduce=1)
    assert result.findings, f"{scenario.name}: nothing found in 500 random schedules"
    finding = result.findings[0]
    assert str(finding.problem.kind) == scenario.expect, finding.text(timeline=False)
    if scenario.name in ("rdma-odp-put-outside-rwsem-freed-held", "rdma-odp-literal-release-tail"):
        assert "LockFreedError" in finding.problem.message and "freed while held" in finding.problem.message
    replayed = replay(scenario, finding.schedule)
    assert replayed.problem is not None and str(replayed.problem.kind) == scenario.expect


@pytest.mark.parametrize("scenario", CLEAN, ids=lambda s: s.name)
def test_fixed_form_is_clean_under_exhaustive_dfs(scenario: Scenario) -> None:
    result = explore(scenario, strategy="dfs", budget=20000, preemptions=2)
    assert not result.findings, result.findings[0].text(timeline=False)
    assert result.complete, f"{scenario.name}: DFS did not finish within the budget"


@pytest.mark.parametrize("scenario", CLEAN_SLOW, ids=lambda s: s.name)
def test_long_fixed_form_is_clean_under_pct(scenario: Scenario) -> None:
    result = explore(scenario, strategy="pct", budget=100, seed=3)
    assert not result.findings, result.findings[0].text(timeline=False)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", CLEAN_SLOW, ids=lambda s: s.name)
def test_long_fixed_form_is_clean_under_exhaustive_dfs(scenario: Scenario) -> None:
    result = explore(scenario, strategy="dfs", budget=50000, preemptions=2)
    assert not result.findings, result.findings[0].text(timeline=False)
    assert result.complete
