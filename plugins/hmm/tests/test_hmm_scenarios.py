"""The plugin's explorer scenarios: the 5.3 use-after-free is found and replays; 5.4 stays clean."""

from __future__ import annotations

import pytest

from mmu_notifier.scenarios import explore, replay, scenarios

LIFETIME_FLOWS = ("invalidate", "exit")


def test_scenarios_reach_the_explorer_through_the_plugin_hook():
    known = scenarios(plugins=True)
    expected = {
        **{f"hmm-getput-{flow}": None for flow in LIFETIME_FLOWS},
        **{f"hmm-legacy-{flow}": None for flow in LIFETIME_FLOWS},
        **{f"hmm-legacy-unfixed-{flow}": "use-after-free" for flow in LIFETIME_FLOWS},
        "hmm-device-coherence": None,
        "hmm-device-range-valid": "invariant",
    }
    assert {name: known[name].expect for name in expected} == expected


@pytest.mark.parametrize("flow", LIFETIME_FLOWS)
def test_unfixed_legacy_use_after_free_is_found_with_a_replayable_schedule(flow):
    name = f"hmm-legacy-unfixed-{flow}"
    result = explore(name, "pct", budget=2000, seed=1, reproduce=3)
    (finding,) = result.bugs
    problem = finding.problem
    assert problem.kind.value == "use-after-free" and "LegacyHmm" in problem.message
    assert "hmm_free" in problem.details["free site"]
    schedule = finding.minimised or finding.schedule
    assert schedule.startswith(f"mx1:{name}:") and finding.replay.endswith(schedule)
    assert finding.reproduced == (3, 3)
    again = replay(name, schedule)
    assert again.problem is not None and again.problem.signature == problem.signature


@pytest.mark.parametrize("flow", LIFETIME_FLOWS)
def test_unfixed_legacy_use_after_free_is_within_two_preemptions(flow):
    result = explore(f"hmm-legacy-unfixed-{flow}", "dfs", budget=10_000, preemptions=2, minimise_budget=0,
                     reproduce=0)
    assert [f.problem.kind.value for f in result.bugs] == ["use-after-free"]


@pytest.mark.parametrize("flow", LIFETIME_FLOWS)
def test_default_scheme_is_clean_under_bounded_exhaustive_search(flow):
    result = explore(f"hmm-getput-{flow}", "dfs", budget=100_000, preemptions=2, minimise_budget=0, reproduce=0)
    assert result.complete and not result.findings and result.stats.step_bound == 0


@pytest.mark.parametrize("flow", LIFETIME_FLOWS)
def test_fixed_legacy_scheme_is_clean_with_one_preemption(flow):
    result = explore(f"hmm-legacy-{flow}", "dfs", budget=100_000, preemptions=1, minimise_budget=0, reproduce=0)
    assert result.complete and not result.findings


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["getput", "legacy"])
@pytest.mark.parametrize("flow", LIFETIME_FLOWS)
def test_clean_schemes_with_three_preemptions(scheme, flow):
    result = explore(f"hmm-{scheme}-{flow}", "dfs", budget=1_000_000, preemptions=3, minimise_budget=0, reproduce=0)
    assert result.complete and not result.findings and result.stats.step_bound == 0
