"""Replay: exact reproduction of any run, and loud failure on divergence or staleness."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmu_notifier import sync
from mmu_notifier.explore import (
    PCT,
    DivergenceError,
    Execution,
    RandomWalk,
    Scenario,
    ScenarioInstance,
    Schedule,
    StaleScheduleError,
)
from mmu_notifier.explore._explorer import schedule_of
from mmu_notifier.scenarios import replay, scenarios

BUILTINS = sorted(scenarios())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(BUILTINS), seed=st.integers(min_value=0, max_value=2**32), pct=st.booleans())
def test_replay_reproduces_any_run_step_for_step(name: str, seed: int, pct: bool) -> None:
    scenario = scenarios()[name]
    strategy = PCT(2, seed) if pct else RandomWalk(seed)
    strategy.start()
    original = Execution(scenario, strategy).run()
    again = replay(scenario, schedule_of(scenario, original)).outcome
    assert [(t, op) for t, op, _ in again.trace] == [(t, op) for t, op, _ in original.trace]
    assert again.status == original.status
    assert (again.problem is None) == (original.problem is None)
    if original.problem is not None:
        assert again.problem is not None and again.problem.signature == original.problem.signature


def _two_threads(steps_of_b: int) -> ScenarioInstance:
    run = ScenarioInstance()
    run.thread("A")(lambda: [sync.yield_now() for _ in range(2)])
    run.thread("B")(lambda: [sync.yield_now() for _ in range(steps_of_b)])
    return run


def _schedule(scenario: Scenario, seed: int = 0) -> str:
    strategy = RandomWalk(seed)
    return schedule_of(scenario, Execution(scenario, strategy).run())


def test_divergence_names_the_step_and_the_runnable_threads() -> None:
    scenario = Scenario("two", lambda: _two_threads(2))
    sched = Schedule.parse(_schedule(scenario))
    # A has 3 steps (start + 2 yields): a fourth step of A cannot be followed
    bad = dataclasses.replace(sched, steps=(0, 0, 0, 0, 1, 1, 1))
    with pytest.raises(DivergenceError, match="at step 3 thread A was expected runnable; runnable were B"):
        replay(scenario, str(bad))


def test_a_changed_scenario_version_makes_the_schedule_stale() -> None:
    scenario = Scenario("two", lambda: _two_threads(2))
    sched = _schedule(scenario)
    with pytest.raises(StaleScheduleError, match="changed since the schedule was recorded"):
        replay(dataclasses.replace(scenario, version=2), sched)


def test_a_changed_primitive_sequence_makes_the_schedule_stale() -> None:
    scenario = Scenario("two", lambda: _two_threads(2))
    sched = _schedule(scenario)

    def other_ops() -> ScenarioInstance:
        lock = sync.Mutex("m")
        run = ScenarioInstance()
        run.thread("A")(lambda: [sync.yield_now() for _ in range(2)])

        @run.thread("B")
        def b() -> None:
            lock.lock()  # was a yield: same thread steps, different operation
            lock.unlock()

        return run

    with pytest.raises(StaleScheduleError, match="sequence differs"):
        replay(dataclasses.replace(scenario, build=other_ops), sched)


def test_a_schedule_of_another_scenario_is_refused() -> None:
    sched = _schedule(Scenario("two", lambda: _two_threads(2)))
    with pytest.raises(StaleScheduleError, match="recorded for scenario 'two'"):
        replay("get-put", sched)


def test_a_longer_run_than_the_schedule_diverges() -> None:
    scenario = Scenario("two", lambda: _two_threads(2))
    sched = Schedule.parse(_schedule(scenario))
    with pytest.raises(DivergenceError, match="goes on past the schedule"):
        replay(scenario, str(dataclasses.replace(sched, steps=sched.steps[:-1])))
