"""The v5.3 scheme: its behaviour when nothing races, and the races the explorer finds and replays.

The v5.4 scheme runs the very same scenarios and passes bounded exhaustive exploration.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import mmu_notifier as mn
from mmu_notifier.explore import Kind, explore, replay
from mmu_notifier_gru import GruDriver, GruDriverBase, GruMMStruct
from mmu_notifier_gru.device import gru_flush_tlb_range
from mmu_notifier_gru.legacy import LegacyGruMMStruct
from mmu_notifier_gru.scenarios import SCENARIOS

Loaded = tuple[mn.Kernel, GruDriverBase]
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
RACES = ("gru-legacy-drop-vs-register", "gru-legacy-release-vs-drop")
CLEAN = ("gru-drop-vs-register", "gru-release-vs-drop", "gru-dropin-vs-invalidate", "gru-intr-dropin-vs-invalidate")


def new_thread_state(driver: GruDriverBase, mm: mn.MM) -> mn.VMA:
    """A GSEG with one thread state; returns the GSEG."""
    gseg = driver.gru_file_mmap(mm)
    driver.gru_set_context_option(mm, gseg.start)
    return gseg


def test_legacy_lookup_reuses_the_gms_and_counts_by_hand(make: Callable[..., Loaded]) -> None:
    kernel, driver = make(scheme="legacy")
    mm = mn.MM(kernel)
    first, second = new_thread_state(driver, mm), new_thread_state(driver, mm)
    (gms,) = (gts.ts_gms for gts in driver.thread_states(mm) if gts.ts_vma is first)
    assert isinstance(gms, LegacyGruMMStruct) and gms.ms_refcnt.value == 2 and gms.users == 1
    driver.gru_vma_close(first)
    assert gms.ms_refcnt.value == 1 and gms.linked
    driver.gru_vma_close(second)
    assert driver.stats["gms_free"] == 1, "freed at once, after unregister's own grace period"
    with pytest.raises(mn.UseAfterFreeError):
        gms.ms_refcnt  # noqa: B018 - the legacy drop kfree'd it
    assert mm.mm_count.value == 1 and not kernel.warnings


def test_legacy_release_sets_the_flag_and_the_last_drop_skips_unregister_leaking_the_mm_pin(
    make: Callable[..., Loaded],
) -> None:
    kernel, driver = make(scheme="legacy")
    mm = mn.MM(kernel)
    gseg = new_thread_state(driver, mm)
    (gts,) = driver.thread_states(mm)
    gms = gts.ts_gms
    assert isinstance(gms, LegacyGruMMStruct)
    mm.exit()
    assert gms.ms_released and not gms.linked
    driver.gru_vma_close(gseg)
    assert driver.stats["gms_free"] == 1 and kernel.srcu.pending_callbacks() == 0, "no grace period was asked for"
    assert mm.mm_count.value == 1 and not mm.freed, "the registration's mm pin is never dropped (as in v5.3)"


def test_the_v54_driver_frees_the_mm_after_the_same_sequence(make: Callable[..., Loaded]) -> None:
    kernel, driver = make()
    mm = mn.MM(kernel)
    gseg = new_thread_state(driver, mm)
    mm.exit()
    driver.gru_vma_close(gseg)
    driver.gru_exit(kernel)
    assert driver.stats["gms_free"] == 1 and mm.freed


@pytest.mark.parametrize("name", RACES)
@pytest.mark.parametrize(("strategy", "budget"), [("random", 1000), ("pct", 300), ("dfs", 2000)])
def test_the_legacy_races_are_found_as_use_after_free(name: str, strategy: str, budget: int) -> None:
    result = explore(BY_NAME[name], strategy, budget=budget, seed=0, minimise_budget=0, reproduce=0)
    kinds = [finding.problem.kind for finding in result.bugs]
    assert kinds and kinds[0] in (Kind.USE_AFTER_FREE, Kind.DOUBLE_FREE), result.text()
    assert result.bugs[0].found_after <= budget


@pytest.mark.parametrize("name", RACES)
def test_a_found_legacy_race_replays_exactly_and_prints_its_replay_command(name: str) -> None:
    result = explore(BY_NAME[name], "pct", budget=300, seed=1, reproduce=5)
    bug = result.bugs[0]
    assert bug.problem.kind is Kind.USE_AFTER_FREE and bug.reproduced == (5, 5)
    text = bug.text()
    assert "replay:" in text and name in text and "in gru_drop_mmu_notifier" in bug.problem.details["free site"]
    for schedule in (bug.schedule, bug.minimised):
        assert schedule is not None
        again = replay(BY_NAME[name], schedule)
        assert again.problem is not None and again.problem.signature == bug.problem.signature


def test_both_sides_of_the_drop_register_race_touch_the_freed_gms() -> None:
    """The register re-references a GMS whose count the drop took to zero; either side may then touch it freed."""
    result = explore(BY_NAME["gru-legacy-drop-vs-register"], "pct", budget=300, seed=0, stop_on_first=False,
                     minimise_budget=0, reproduce=0)
    sites = {(bug.problem.thread, bug.problem.details["access site"].rsplit(" in ", 1)[-1]) for bug in result.bugs}
    assert {("register", "mmu_find_ops"), ("drop", "gru_drop_mmu_notifier")} <= sites
    assert all("in gru_drop_mmu_notifier" in bug.problem.details["free site"] for bug in result.bugs)


@pytest.mark.parametrize("name", CLEAN)
def test_the_v54_scenarios_pass_bounded_exhaustive_exploration(name: str) -> None:
    result = explore(BY_NAME[name], "dfs", budget=100_000, preemptions=2)
    assert result.complete and result.findings == [], result.text()
    assert result.stats.schedules > 100


@pytest.mark.slow
@pytest.mark.parametrize("name", CLEAN)
def test_the_v54_scenarios_pass_exhaustive_exploration_with_three_preemptions(name: str) -> None:
    result = explore(BY_NAME[name], "dfs", budget=1_000_000, preemptions=3)
    assert result.complete and result.findings == [], result.text()


def test_a_start_that_flushes_without_counting_the_range_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dropin scenario's coherence check has teeth: without ms_range_active a stale dropin is found."""

    @mn.hookimpl
    def uncounted_start(self: GruDriverBase, subscription: mn.MMUNotifier, range: mn.Range) -> int:
        assert isinstance(subscription, GruMMStruct)
        gru_flush_tlb_range(subscription, self.gru_base, range.start, range.end - range.start, range.mm.page_shift)
        return 0

    @mn.hookimpl
    def waking_end(self: GruDriverBase, subscription: mn.MMUNotifier, range: mn.Range) -> None:
        assert isinstance(subscription, GruMMStruct)
        subscription.ms_wait_queue.wake_up_all()

    monkeypatch.setattr(GruDriver, "invalidate_range_start", uncounted_start)
    monkeypatch.setattr(GruDriver, "invalidate_range_end", waking_end)
    result = explore(BY_NAME["gru-dropin-vs-invalidate"], "dfs", budget=100_000, minimise_budget=0, reproduce=0)
    assert result.bugs and result.bugs[0].problem.kind is Kind.INVARIANT
    assert "stale dropin" in result.bugs[0].problem.message
