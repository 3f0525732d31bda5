"""Strategies: determinism per seed, PCT priorities, bounded DFS counts and its reduction."""

from __future__ import annotations

from math import comb

import pytest

from mmu_notifier import sync
from mmu_notifier.explore import BoundedDFS, NondeterministicScenarioError, Scenario, ScenarioInstance
from mmu_notifier.explore._dfs import dependent
from mmu_notifier.scenarios import explore


def _yielders(a: int, b: int) -> Scenario:
    def build() -> ScenarioInstance:
        run = ScenarioInstance()
        run.thread("A")(lambda: [sync.yield_now() for _ in range(a)])
        run.thread("B")(lambda: [sync.yield_now() for _ in range(b)])
        return run

    return Scenario(f"yield-{a}-{b}", build)


def test_random_is_deterministic_per_seed_and_varies_across_seeds() -> None:
    def traces(seed: int) -> list[str]:
        result = explore("get-put", "random", budget=30, seed=seed, minimise_budget=0, reproduce=0)
        return [str(result.stats.distinct), str(result.stats.steps_total)]

    assert traces(5) == traces(5)
    assert len({tuple(traces(s)) for s in range(5)}) > 1


def test_unbounded_dfs_without_reduction_enumerates_every_interleaving() -> None:
    # yields are dependent on everything, so every interleaving is distinct: C(a+b+2, a+1)
    result = explore(_yielders(2, 2), BoundedDFS(preemptions=10, reduction=False), budget=10_000)
    assert result.complete
    assert result.stats.schedules == result.stats.distinct == comb(6, 3)


def test_preemption_bound_zero_runs_each_thread_to_completion() -> None:
    result = explore(_yielders(3, 3), BoundedDFS(preemptions=0), budget=100)
    assert result.complete
    assert result.stats.schedules == 2  # A first or B first, never switched while runnable


def _independent_lockers(n: int) -> Scenario:
    def build() -> ScenarioInstance:
        run = ScenarioInstance()
        for i in range(n):
            lock = sync.Mutex(f"m{i}")

            def body(lock: sync.Mutex = lock) -> None:
                for _ in range(2):
                    with lock:
                        pass

            run.thread(f"T{i}")(body)
        return run

    return Scenario("independent", build)


def test_sleep_sets_collapse_independent_threads() -> None:
    plain = explore(_independent_lockers(3), BoundedDFS(2, reduction=False), budget=100_000)
    reduced = explore(_independent_lockers(3), BoundedDFS(2, reduction=True), budget=100_000)
    assert plain.complete and reduced.complete
    assert reduced.stats.schedules * 5 < plain.stats.schedules


def test_dependence_rules() -> None:
    m1, m2, a = sync.Mutex("m1"), sync.Mutex("m2"), sync.Atomic("a")
    assert dependent("mutex_lock", m1, "mutex_unlock", m1)
    assert not dependent("mutex_lock", m1, "mutex_lock", m2)
    assert not dependent("atomic_read", a, "atomic_read", a)
    assert dependent("atomic_read", a, "atomic_add", a)
    assert not dependent("start", None, "mutex_lock", m1)
    assert dependent("yield", None, "mutex_lock", m1)
    assert dependent("walk", object(), "atomic_add", a)
    srcu = object()
    assert dependent("srcu_read_lock", srcu, "spin_lock", m1)
    assert not dependent("srcu_read_lock", srcu, "atomic_add", a)


def test_pct_finds_a_depth_two_ordering_bug() -> None:
    # B must run between A's two halves: needs one priority change point
    def build() -> ScenarioInstance:
        state = {"phase": 0, "seen": -1}
        run = ScenarioInstance()

        @run.thread("A")
        def a() -> None:
            for phase in range(1, 6):
                state["phase"] = phase
                sync.yield_now()

        @run.thread("B")
        def b() -> None:
            sync.yield_now()
            if state["phase"] == 3:
                raise AssertionError("B saw phase 3")

        return run

    result = explore(Scenario("pct-depth2", build), "pct", budget=200, seed=3, depth=2)
    assert result.bugs and result.bugs[0].found_after <= 200


def test_pct_rejects_depth_zero() -> None:
    with pytest.raises(ValueError, match="depth"):
        explore("get-put", "pct", depth=0)


def test_nondeterministic_scenario_is_refused_by_dfs() -> None:
    calls = [0]

    def build() -> ScenarioInstance:
        calls[0] += 1
        run = ScenarioInstance()
        run.thread("A")(sync.yield_now)
        if calls[0] % 2:
            run.thread("B")(sync.yield_now)
        return run

    with pytest.raises(NondeterministicScenarioError, match="not deterministic"):
        explore(Scenario("flaky", build), "dfs", budget=100)


def test_time_budget_stops_the_exploration() -> None:
    result = explore("get-put", "random", budget=10**9, time_budget=0.05, minimise_budget=0, reproduce=0)
    assert 0 < result.stats.schedules < 10**9
    assert result.stats.elapsed < 1.0
