"""The engine runs Scenario objects; the scenario library looks names up, and old schedules still replay."""

from __future__ import annotations

import pytest

from mmu_notifier import scenarios
from mmu_notifier.errors import UsageError
from mmu_notifier.explore import Kind, Scenario, explore, replay

#: schedule strings printed by the explorer before its engine and scenarios were split (issue 11):
#: (scenario, schedule, the problem the run showed, its steps). If a model change makes them stale
#: on purpose, bump the scenario's version (old strings then say so) and record new ones.
RECORDED = [
    ("unregister-no-release", "mx1:unregister-no-release:09d28813:91a731f1:b2a6b2a4b2", Kind.USE_AFTER_FREE, 16),
    ("unregister-no-release", "mx1:unregister-no-release:09d28813:cfff45bc:ba10b5", None, 16),
    ("get-put", "mx1:get-put:71985835:2ca62b66:ab2a8b2abcbcbd2", None, 21),
    ("abba-deadlock", "mx1:abba-deadlock:79ac20fb:887f4197:b2a2ba", Kind.DEADLOCK, 6),
    ("lock-order-inversion", "mx1:lock-order-inversion:3e3d525d:0447c8dc:ba7b6", Kind.LOCK_ORDER, 14),
    ("sleep-under-spinlock", "mx1:sleep-under-spinlock:647713a8:8c6bf18c:ba3", Kind.SLEEP_IN_ATOMIC, 4),
]


@pytest.mark.parametrize(("name", "schedule", "kind", "steps"), RECORDED, ids=[r[1] for r in RECORDED])
def test_schedules_printed_before_the_split_still_replay(name: str, schedule: str, kind: Kind | None,
                                                          steps: int) -> None:
    replayed = scenarios.replay(name, schedule)
    assert len(replayed.outcome.trace) == steps
    assert (replayed.problem.kind if replayed.problem else None) == kind


@pytest.mark.parametrize("run", [explore, replay])
def test_the_engine_refuses_a_name_and_says_where_names_are_looked_up(run: object) -> None:
    with pytest.raises(UsageError, match=r"takes a Scenario, not the name 'get-put'.*mmu_notifier\.scenarios\."):
        run("get-put", "mx1:get-put:71985835:2ca62b66:ab2a8b2abcbcbd2")  # type: ignore[operator]


def test_the_engine_refuses_what_is_not_a_scenario() -> None:
    with pytest.raises(UsageError, match="takes a Scenario, not int 3"):
        explore(3)  # type: ignore[arg-type]


def test_the_library_explores_by_name_what_the_engine_explores_by_object() -> None:
    by_name = scenarios.explore("get-put", "dfs", budget=100_000, preemptions=1)
    by_object = explore(scenarios.get("get-put"), "dfs", budget=100_000, preemptions=1)
    assert by_name.complete and by_object.complete
    assert by_name.stats.schedules == by_object.stats.schedules
    assert not by_name.findings and not by_object.findings


def test_the_library_takes_scenario_objects_too() -> None:
    scenario = scenarios.get("abba-deadlock")
    assert isinstance(scenario, Scenario)
    assert scenarios.explore(scenario, "dfs", budget=1000).bugs[0].problem.kind is Kind.DEADLOCK


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(scenarios.UnknownScenarioError, match=r"unknown scenario 'no-such'; known: .*get-put"):
        scenarios.replay("no-such", "mx1:no-such:00000000:00000000:a")


def test_the_builtins_are_in_the_registry() -> None:
    names = {s.name for s in scenarios.BUILTIN}
    assert names == {"unregister-no-release", "get-put", "abba-deadlock", "lock-order-inversion",
                     "sleep-under-spinlock", "interval-remove-race", "interval-remove-fixed",
                     "interval-insert-after-exit", "interval-insert-after-exit-fixed", "interval-oom-reaper-stuck"}
    assert names <= set(scenarios.scenarios())


def test_a_report_names_model_frames_only_not_the_engine() -> None:
    problem = scenarios.replay("unregister-no-release", RECORDED[0][1]).problem
    assert problem is not None and problem.kind is Kind.USE_AFTER_FREE
    assert problem.details["free site"].startswith("mmu_notifier/scenarios/notifier.py:")
    assert "mmu_notifier/scenarios/notifier.py" in problem.details["stack"]
    assert "mmu_notifier/explore/" not in problem.details["stack"]
