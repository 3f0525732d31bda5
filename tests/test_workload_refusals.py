"""The main job's judgement of device accesses refused although every invalidation ended (workload/refusals.py)."""

from __future__ import annotations

import pytest

from mmu_notifier.invariants import PAIRING
from mmu_notifier.mm import MM
from mmu_notifier.workload import refusals
from mmu_notifier.workload.default import DEFAULT
from mmu_notifier.workload.world import JobWorld, new_world


@pytest.fixture
def world() -> JobWorld:
    return new_world(DEFAULT.model_copy(update={"drivers": ["gntdev"]}))


def _mm(world: JobWorld) -> MM:
    return world.monitor.track_mm(MM(world.kernel))


def test_two_refused_steps_in_a_row_on_a_quiet_mm_are_filed_once_as_pairing(world: JobWorld) -> None:
    mm = _mm(world)
    before = refusals.quiet(world, "gntdev", mm)
    assert before is not None  # nothing in flight on a fresh mm
    refusals.judge_access(world, "gntdev", mm, before, served=0, refused=4)
    assert world.stats["gntdev"].violations == []  # once may be the driver's own deferred work
    for _ in range(3):
        refusals.judge_access(world, "gntdev", mm, before, served=0, refused=4)
    (violation,) = world.stats["gntdev"].violations
    assert violation.startswith(f"[{PAIRING}] gntdev refused every device access of mm {mm.id} in 2 access steps")


def test_a_served_page_resets_the_count(world: JobWorld) -> None:
    mm = _mm(world)
    before = refusals.quiet(world, "gntdev", mm)
    refusals.judge_access(world, "gntdev", mm, before, served=0, refused=4)
    refusals.judge_access(world, "gntdev", mm, before, served=1, refused=3)
    refusals.judge_access(world, "gntdev", mm, before, served=0, refused=4)
    assert world.stats["gntdev"].violations == []


def test_an_invalidation_delivered_during_the_step_makes_it_unjudged(world: JobWorld) -> None:
    mm = _mm(world)
    for _ in range(3):
        before = refusals.quiet(world, "gntdev", mm)
        world.stats["gntdev"].invalidations["CLEAR"] += 1  # as the tracer counts a start during the access
        refusals.judge_access(world, "gntdev", mm, before, served=0, refused=4)
    assert world.stats["gntdev"].violations == []


def test_no_witness_while_a_start_callback_runs_on_the_drivers_subscription_or_for_an_exited_mm(
        world: JobWorld) -> None:
    mm = _mm(world)
    handle = world.exercisers["gntdev"].attach(mm)
    record = world.monitor.recorder.record_of(handle.subscription)
    record.running["invalidate_range_start"] = 1  # as the recorder counts a start callback that has not returned
    assert refusals.quiet(world, "gntdev", mm) is None
    del record.running["invalidate_range_start"]
    record.running["clear_flush_young"] = 1  # aging blocks nothing
    assert refusals.quiet(world, "gntdev", mm) is not None
    del record.running["clear_flush_young"]
    world.exercisers["gntdev"].detach(handle)
    mm.exit()
    assert refusals.quiet(world, "gntdev", mm) is None


def test_a_step_with_only_errors_is_not_a_refusal(world: JobWorld) -> None:
    mm = _mm(world)
    before = refusals.quiet(world, "gntdev", mm)
    for _ in range(3):
        refusals.judge_access(world, "gntdev", mm, before, served=0, refused=0)
    assert world.stats["gntdev"].violations == []


def test_no_witness_while_a_start_delivered_to_the_drivers_subscription_has_not_ended(world: JobWorld) -> None:
    from mmu_notifier import notifier
    from mmu_notifier.range import Event, Range

    mm = _mm(world)
    start = mm.mmap(4 * mm.page_size)
    handle = world.monitor.attached("gntdev", world.exercisers["gntdev"].attach(mm))
    assert refusals.quiet(world, "gntdev", mm) is not None
    range = Range(mm, start, start + mm.page_size, Event.CLEAR)
    notifier.invalidate_range_start(range)
    assert refusals.quiet(world, "gntdev", mm) is None  # in flight for gntdev: its refusals mean "in progress"
    notifier.invalidate_range_end(range)
    after = refusals.quiet(world, "gntdev", mm)
    assert after is not None and after.delivered == 1  # quiet again, and the start is counted in the witness
    world.monitor.detached("gntdev", handle)
    world.exercisers["gntdev"].detach(handle)
