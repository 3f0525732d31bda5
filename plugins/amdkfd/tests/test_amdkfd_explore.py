"""The explorer on amdkfd: the patch-09 race under 5.3, and its absence under 5.4 and get."""

from __future__ import annotations

import pytest

from mmu_notifier.explore import Kind, Step, explore, replay
from mmu_notifier.scenarios import scenarios
from mmu_notifier_amdkfd.scenarios import SCENARIOS

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
CLEAN = [name for name, scenario in BY_NAME.items() if scenario.expect is None]


def _index(steps: tuple[Step, ...], thread: str, op: str, resource: str = "", after: int = -1) -> int:
    """Index of the first step after ``after`` of ``thread`` doing ``op`` (on a resource ending in ``resource``)."""
    for step in steps[after + 1 :]:
        if step.thread == thread and step.op == op and step.resource.endswith(resource):
            return step.index
    raise AssertionError(f"no {op} {resource} of {thread} after step {after}")


def test_the_plugin_contributes_its_scenarios_to_the_explorer() -> None:
    known = scenarios(plugins=True)
    assert set(BY_NAME) <= set(known)
    assert {name for name, s in BY_NAME.items() if s.expect == "use-after-free"} == {
        "amdkfd-open-race-legacy", "amdkfd-cwsr-race-legacy", "amdkfd-evict-race-5.4",
    }


def test_legacy_late_failure_is_a_use_after_free_with_the_patch_09_interleaving() -> None:
    result = explore(BY_NAME["amdkfd-open-race-legacy"], "dfs", budget=200, preemptions=2)
    bug = result.bugs[0]
    problem = bug.problem
    assert problem.kind is Kind.USE_AFTER_FREE and problem.thread == "munmap"
    assert "KfdProcessNotifier" in problem.message
    assert "in free_process" in problem.details["free site"]
    assert problem.details["access site"].endswith(("in _start", "in _end"))
    # drivers.md section 5, steps 1-6, in the timeline. A step is "perform the op, run to the next point":
    # the walker's step that last ran before the unlink stopped it holding kfd's notifier.
    steps = bug.timeline.steps
    linked = _index(steps, "open", "spin_lock", "mmu_notifier_mm.lock")
    failed = _index(steps, "open", "fail init_apertures", after=linked)
    marked = _index(steps, "open", "unregister_no_release")
    unlinked = _index(steps, "open", "spin_lock", "mmu_notifier_mm.lock", after=marked)
    freed = _index(steps, "open", "kfree", "KfdProcess", after=unlinked)
    walker = [step for step in steps if step.thread == "munmap"]
    holding = max(step.index for step in walker if step.index < unlinked)
    resumed = min(step.index for step in walker if step.index > freed)
    assert linked < holding < unlinked and failed < unlinked < freed < resumed
    assert (steps[holding].op, steps[holding].resource) == ("srcu_read_lock", "mmu_notifier_srcu")
    assert (steps[resumed].op, steps[resumed].resource) == ("walk", "KfdProcessNotifier")
    text = bug.text()
    for line in ("BUG use-after-free in thread munmap", "fail init_apertures", "unregister_no_release", "kfree"):
        assert line in text


def test_the_legacy_race_schedule_replays_the_failure_every_time() -> None:
    bug = explore(BY_NAME["amdkfd-open-race-legacy"], "dfs", budget=200, reproduce=0).bugs[0]
    for schedule in (bug.schedule, bug.minimised):
        assert schedule is not None
        for _ in range(10):
            again = replay(BY_NAME["amdkfd-open-race-legacy"], schedule)
            assert again.problem is not None and again.problem.signature == bug.problem.signature


def test_legacy_cwsr_failure_races_page_aging() -> None:
    result = explore(BY_NAME["amdkfd-cwsr-race-legacy"], "dfs", budget=200)
    problem = result.bugs[0].problem
    assert problem.kind is Kind.USE_AFTER_FREE and problem.thread == "young"
    assert result.bugs[0].reproduced == (5, 5)


@pytest.mark.parametrize("name", CLEAN)
def test_5_4_and_get_are_clean_under_bounded_exhaustive_search(name: str) -> None:
    result = explore(BY_NAME[name], "dfs", budget=100_000, preemptions=2)
    assert result.complete and result.findings == [], result.text()
    assert ": exhaustive to" in result.text() and result.text().splitlines()[0].endswith(": clean")


def test_an_eviction_request_racing_exit_can_outlive_the_process() -> None:
    result = explore(BY_NAME["amdkfd-evict-race-5.4"], "random", budget=3000, seed=0)
    bug = result.bugs[0]
    assert bug.problem.kind is Kind.USE_AFTER_FREE
    assert "in free_process" in bug.problem.details["free site"]
    assert bug.reproduced == (5, 5)


@pytest.mark.slow
@pytest.mark.parametrize("name", CLEAN)
def test_5_4_and_get_stay_clean_with_three_preemptions(name: str) -> None:
    result = explore(BY_NAME[name], "dfs", budget=1_000_000, preemptions=3)
    assert result.complete and result.findings == [], result.text()


@pytest.mark.slow
@pytest.mark.parametrize("name", CLEAN)
@pytest.mark.parametrize("strategy", ("random", "pct"))
def test_5_4_and_get_stay_clean_under_long_random_exploration(name: str, strategy: str) -> None:
    result = explore(BY_NAME[name], strategy, budget=20_000, seed=1, depth=3)
    assert result.findings == [], result.text()
