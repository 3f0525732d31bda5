"""Detectors on small purpose-built scenarios: use after free, double free, leak, sleep, invariants."""

from __future__ import annotations

from mmu_notifier import sync
from mmu_notifier.errors import DoubleFreeError, UseAfterFreeError
from mmu_notifier.explore import Kind, LeakTracker, Scenario, ScenarioInstance
from mmu_notifier.explore._findings import from_exception
from mmu_notifier.scenarios import explore


def test_use_after_free_reports_free_and_access_sites() -> None:
    def touch() -> None:
        raise UseAfterFreeError("Obj.field touched after free_notifier", free_site="driver.py:10 in unwind")

    try:
        touch()
    except UseAfterFreeError as error:
        problem = from_exception(error, "B", 7)
    assert problem.kind is Kind.USE_AFTER_FREE
    assert problem.details["free site"] == "driver.py:10 in unwind"
    assert problem.details["access site"].endswith("in touch")
    assert problem.thread == "B" and problem.step == 7


def test_double_free_is_its_own_kind() -> None:
    try:
        raise DoubleFreeError("freed twice", free_site="a.py:1 in first")
    except DoubleFreeError as error:
        problem = from_exception(error, "A", 0)
    assert problem.kind is Kind.DOUBLE_FREE
    assert problem.details["free site"] == "a.py:1 in first"
    assert "second free" in problem.details


def test_leak_tracker_reports_allocations_never_freed() -> None:
    def build() -> ScenarioInstance:
        tracker = LeakTracker("buffer")
        run = ScenarioInstance()
        objs = [object(), object()]

        @run.thread("A")
        def alloc_two_free_one() -> None:
            for i, obj in enumerate(objs):
                tracker.alloc(obj, f"site{i}")
            sync.yield_now()
            tracker.free(objs[0])

        run.check(tracker.check)
        return run

    bug = explore(Scenario("leaky", build), "random", budget=5).bugs[0]
    assert bug.problem.kind is Kind.LEAK
    assert "1 buffer(s) never freed (allocated at site1)" in bug.problem.message


def test_sleep_in_non_blockable_section_is_reported() -> None:
    def build() -> ScenarioInstance:
        lock = sync.Mutex("driver_lock")
        run = ScenarioInstance()

        @run.thread("invalidate")
        def invalidate() -> None:
            with sync.non_block(), lock:
                pass

        return run

    bug = explore(Scenario("nonblock", build), "random", budget=5).bugs[0]
    assert bug.problem.kind is Kind.SLEEP_IN_ATOMIC
    assert "non-blockable" in bug.problem.message


def test_findings_are_deduplicated_by_signature_and_real_bugs_come_first() -> None:
    result = explore("abba-deadlock", "dfs", budget=1000, stop_on_first=False, minimise_budget=0, reproduce=0)
    kinds = [f.problem.kind for f in result.findings]
    assert kinds == [Kind.DEADLOCK, Kind.LOCK_ORDER]
    assert result.stats.failing >= 2
