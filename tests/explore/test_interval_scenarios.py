"""The interval-notifier bugs J-1, J-3 and J-4 (rdma-radeon-interval.md section J) in the explorer."""

from __future__ import annotations

from mmu_notifier.explore import Kind
from mmu_notifier.scenarios import explore, replay, scenarios


def test_the_interval_scenarios_are_built_in_with_their_expectations() -> None:
    known = scenarios()
    assert known["interval-remove-race"].expect == "use-after-free"
    assert known["interval-remove-fixed"].expect is None
    assert known["interval-insert-after-exit"].expect == "invariant"
    assert known["interval-insert-after-exit-fixed"].expect is None
    assert known["interval-oom-reaper-stuck"].expect == "deadlock"
    assert "reading of the code" in known["interval-oom-reaper-stuck"].description


def test_j1_unlocked_remove_wait_is_a_use_after_free_in_the_deferred_walk() -> None:
    result = explore("interval-remove-race", "pct", budget=200, seed=0, depth=3)
    bug = result.bugs[0]
    assert bug.problem.kind is Kind.USE_AFTER_FREE
    assert "in invalidate_end" in bug.problem.details["access site"]
    assert "remove_and_free" in bug.problem.details["free site"]
    assert bug.schedule is not None
    again = replay("interval-remove-race", bug.schedule)
    assert again.problem is not None and again.problem.signature == bug.problem.signature


def test_j1_is_also_found_by_bounded_dfs() -> None:
    result = explore("interval-remove-race", "dfs", budget=1000, preemptions=3)
    assert result.bugs and result.bugs[0].problem.kind is Kind.USE_AFTER_FREE


def test_j1_fixed_remove_is_clean_under_bounded_exhaustive_search() -> None:
    """One more preemption than the race needs (it needs 3), searched to completion."""
    result = explore("interval-remove-fixed", "dfs", budget=100_000, preemptions=4)
    assert result.complete and result.findings == [] and result.stats.schedules > 1000


def test_j3_insert_after_exit_succeeds_silently_in_5_5() -> None:
    result = explore("interval-insert-after-exit", "dfs", budget=100, preemptions=1)
    bug = result.bugs[0]
    assert bug.problem.kind is Kind.INVARIANT and "never invalidated" in bug.problem.message


def test_j3_fixed_insert_is_refused_and_clean_under_bounded_exhaustive_search() -> None:
    result = explore("interval-insert-after-exit-fixed", "dfs", budget=100_000, preemptions=2)
    assert result.complete and result.findings == []


def test_j4_oom_reaper_leaves_the_sequence_odd_and_remove_hangs() -> None:
    result = explore("interval-oom-reaper-stuck", "random", budget=10, seed=0)
    bug = result.bugs[0]
    assert bug.problem.kind is Kind.DEADLOCK
    text = " ".join(bug.problem.details.values())
    assert "mmu_notifier_mm.wq" in text and "nothing left to signal it" in text
