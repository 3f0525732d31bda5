"""The acceptance criteria of issue 3, one test each."""

from __future__ import annotations

import re

from mmu_notifier.explore import Kind
from mmu_notifier.scenarios import explore, replay


def test_unregister_no_release_race_is_found_by_random_within_1000() -> None:
    result = explore("unregister-no-release", "random", budget=1000, seed=0)
    bug = result.bugs[0]
    assert bug.problem.kind is Kind.USE_AFTER_FREE
    assert bug.found_after <= 1000
    assert "in create_process" in bug.problem.details["free site"]  # the driver line that called kfree
    access = bug.problem.details["access site"]
    assert "notifier.py" in access and ("in _start" in access or "in _end" in access)
    assert bug.reproduced == (5, 5)


def test_unregister_no_release_race_is_found_by_pct_depth_2_within_200() -> None:
    result = explore("unregister-no-release", "pct", budget=200, seed=0, depth=2)
    bug = result.bugs[0]
    assert bug.problem.kind is Kind.USE_AFTER_FREE and bug.found_after <= 200
    assert bug.reproduced == (5, 5)


def test_the_race_schedule_replays_the_failure_every_time() -> None:
    bug = explore("unregister-no-release", "random", budget=1000, seed=1).bugs[0]
    for schedule in (bug.schedule, bug.minimised):
        assert schedule is not None
        for _ in range(10):
            again = replay("unregister-no-release", schedule)
            assert again.problem is not None and again.problem.signature == bug.problem.signature


def test_dfs_finds_the_race_within_10_schedules() -> None:
    result = explore("unregister-no-release", "dfs", budget=10, preemptions=2)
    assert result.bugs and result.bugs[0].found_after <= 10


def test_get_put_passes_bounded_exhaustive_search_with_zero_reports() -> None:
    result = explore("get-put", "dfs", budget=100_000, preemptions=2)
    assert result.complete
    assert result.findings == []
    assert result.stats.schedules > 1
    assert result.text().splitlines()[0].endswith(": exhaustive to 2 preemptions: clean")
    assert f"the search is exhausted after {result.stats.schedules} schedules" in result.text()


def test_abba_is_reported_as_deadlock_with_its_cycle() -> None:
    result = explore("abba-deadlock", "random", budget=1000, seed=0)
    bug = result.bugs[0]
    assert bug.problem.kind is Kind.DEADLOCK
    cycle = bug.problem.details["wait-for cycle"]
    assert "lock_a" in cycle and "lock_b" in cycle and "T1" in cycle and "T2" in cycle


def test_opposite_orders_without_deadlock_are_reported_as_lock_order_inversion() -> None:
    result = explore("lock-order-inversion", "dfs", budget=1000)
    assert result.complete and not result.bugs  # no run can deadlock ...
    (predicted,) = result.findings  # ... but lockdep's graph has the cycle
    assert predicted.problem.kind is Kind.LOCK_ORDER and predicted.problem.predictive
    details = predicted.problem.details
    assert set(details) == {"order lock_a -> lock_b", "order lock_b -> lock_a"}
    for order in details.values():  # both orders, each with where the held lock and the new one were taken
        assert re.search(r"lock_. taken at step \d+ at \S+:\d+ in ", order)
        assert re.search(r"then lock_. taken at \S+:\d+ in ", order)


def test_sleeping_under_a_spinlock_is_reported() -> None:
    bug = explore("sleep-under-spinlock", "random", budget=10).bugs[0]
    assert bug.problem.kind is Kind.SLEEP_IN_ATOMIC
    assert "holding spinlock dev_lock" in bug.problem.message
