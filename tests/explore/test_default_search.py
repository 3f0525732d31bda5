"""No false clean: the default search (the portfolio) finds every bundled bug within its default budget.

Every scenario that declares an expected finding (built-ins and the installed
plugins' scenarios) is explored with :func:`mmu_notifier.explore.explore`'s
defaults; the expected kind must be among the findings. The verdict says what
was covered: a proof only for a bounded search that ended.
"""

from __future__ import annotations

import pytest

from mmu_notifier.explore import Portfolio, Scenario, ScenarioInstance, explore
from mmu_notifier.scenarios import get, scenarios

BUGGY = sorted(name for name, s in scenarios(plugins=True).items() if s.expect)


def test_the_bundled_scenarios_include_the_known_hard_one() -> None:
    assert "amdkfd-open-race-legacy" in BUGGY  # 0 of 9 PCT depth-2 tries found it before the portfolio
    assert len(BUGGY) >= 10


@pytest.mark.parametrize("name", BUGGY)
def test_the_default_search_finds_every_bundled_bug(name: str) -> None:
    scenario = get(name, plugins=True)
    result = explore(scenario, minimise_budget=0, reproduce=0)
    kinds = {f.problem.kind.value for f in result.findings}
    assert scenario.expect in kinds, f"{name}: expected {scenario.expect}, found {sorted(kinds)}: {result.verdict}"
    assert result.strategy.startswith("portfolio")
    if result.bugs:
        assert result.stopped == "first finding" and "stopped at the first finding" in result.text()


def test_a_clean_small_scenario_is_proven_to_the_bound_and_says_so() -> None:
    result = explore(get("get-put"))
    assert not result.findings
    # DPOR explored every trace (a proof); the later phases still ran under the default scheduler
    assert result.verdict.startswith("exhaustive: all 34 traces explored (dpor), then ")
    assert result.verdict.endswith(": clean")
    assert "the schedule budget is spent" in result.text()


def _many_threads() -> ScenarioInstance:
    run = ScenarioInstance()
    for i in range(6):
        run.thread(f"T{i}")(lambda: None)
    return run


def test_sampling_alone_never_says_clean() -> None:
    # PCT alone covers nothing exhaustively: the verdict says sampled, not exhaustive
    result = explore(Scenario("noop", _many_threads), "pct", budget=50)
    assert result.verdict == "50 sampled schedules, not exhaustive: no finding"


def test_the_portfolio_moves_on_when_the_dfs_share_is_spent() -> None:
    portfolio = Portfolio(budget=20, seed=1, max_bound=2)
    result = explore(get("amdkfd-cwsr-race-5.4", plugins=True), portfolio, budget=20, minimise_budget=0)
    assert not result.findings
    assert portfolio.ran["dpor"] == 6  # 30 % of the budget for DPOR (not enough to end it) ...
    assert portfolio.ran["dfs 0"] + portfolio.ran["dfs 1"] == 5  # ... 25 % for the bounded DFS ...
    assert portfolio.systematic == 11 and portfolio.sampled == 9  # ... the rest sampled
    # the bound-0 search ended (a proof to 0 preemptions); the bound-1 search did not, so no more is claimed
    assert result.verdict == "exhaustive to 0 preemptions, then 9 sampled schedules (pct depth 2-5, random): clean"
