"""The main job's quiescent coherence check on OS threads: a check that an invalidation overlapped is
dropped, not reported (``Recorder.quiet_seq``, ``world.check_quiescent``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mmu_notifier import notifier
from mmu_notifier.mm import MM
from mmu_notifier.range import Event, Range
from mmu_notifier.workload.default import DEFAULT
from mmu_notifier.workload.world import JobWorld, check_quiescent, new_world


@pytest.fixture
def world() -> JobWorld:
    return new_world(DEFAULT.model_copy(update={"drivers": ["gntdev"]}))


@pytest.fixture
def attached(world: JobWorld) -> Iterator[tuple[MM, int]]:
    """A tracked mm with four mapped pages and gntdev attached; yields (mm, first address)."""
    mm = world.monitor.track_mm(MM(world.kernel))
    start = mm.mmap(4 * mm.page_size)
    handle = world.monitor.attached("gntdev", world.exercisers["gntdev"].attach(mm))
    yield mm, start
    world.monitor.detached("gntdev", handle)
    world.exercisers["gntdev"].detach(handle)


def test_quiet_seq_counts_the_starts_of_each_mm_and_is_none_while_one_is_in_flight(
        world: JobWorld, attached: tuple[MM, int]) -> None:
    mm, start = attached
    other = world.monitor.track_mm(MM(world.kernel))
    recorder = world.monitor.recorder
    before = recorder.quiet_seq(mm)
    assert before is not None
    range = Range(mm, start, start + mm.page_size, Event.CLEAR)
    notifier.invalidate_range_start(range)
    assert recorder.quiet_seq(mm) is None
    assert recorder.quiet_seq(other) == 0  # another mm is not disturbed
    notifier.invalidate_range_end(range)
    assert recorder.quiet_seq(mm) == before + 1  # quiet again, one start later


def _stale(mm: MM, start: int) -> dict[int, int]:
    """A translation of the first page to a frame the page table does not map there."""
    vpn = start >> mm.page_shift
    return {vpn: 999_999}


def test_a_stale_translation_seen_while_nothing_began_is_reported(
        world: JobWorld, attached: tuple[MM, int], monkeypatch: pytest.MonkeyPatch) -> None:
    mm, start = attached
    monkeypatch.setattr(world.exercisers["gntdev"], "translations", lambda of: _stale(mm, start))
    checks = world.quiescent_checks
    check_quiescent(world, mm)
    (violation,) = world.stats["gntdev"].violations
    assert "gntdev still translates" in violation and "a stale translation" in violation
    assert world.quiescent_checks == checks + 1


def test_a_check_that_an_invalidation_overlapped_keeps_nothing(
        world: JobWorld, attached: tuple[MM, int], monkeypatch: pytest.MonkeyPatch) -> None:
    # On OS threads the background thread may begin (and even end) an invalidation of the mm while the check
    # reads: what it read is no evidence of a stale translation, and the point was not quiescent.
    mm, start = attached

    def overlapped(of: MM) -> dict[int, int]:
        found = _stale(mm, start)  # read before the invalidation dropped it
        range = Range(mm, start, start + mm.page_size, Event.CLEAR)
        notifier.invalidate_range_start(range)
        notifier.invalidate_range_end(range)
        return found

    monkeypatch.setattr(world.exercisers["gntdev"], "translations", overlapped)
    checks = world.quiescent_checks
    check_quiescent(world, mm)
    assert world.stats["gntdev"].violations == []
    assert world.quiescent_checks == checks  # not counted as a quiescent point


def test_no_check_while_an_invalidation_is_in_flight(
        world: JobWorld, attached: tuple[MM, int], monkeypatch: pytest.MonkeyPatch) -> None:
    mm, start = attached
    monkeypatch.setattr(world.exercisers["gntdev"], "translations", lambda of: _stale(mm, start))
    range = Range(mm, start, start + mm.page_size, Event.CLEAR)
    notifier.invalidate_range_start(range)
    check_quiescent(world, mm)
    notifier.invalidate_range_end(range)
    assert world.stats["gntdev"].violations == []


def test_a_read_that_fails_while_the_process_frees_a_subscription_of_the_mm_is_no_finding(
        world: JobWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    # On OS threads the background thread's check may read a device the mm's own process tears down meanwhile
    # (gru: a thread state's GMS, put and then freed after the grace period): what the read raises is the
    # check's own use after free, not the driver's.
    mm = world.monitor.track_mm(MM(world.kernel))
    mm.mmap(4 * mm.page_size)
    exerciser = world.exercisers["gntdev"]
    handle = world.monitor.attached("gntdev", exerciser.attach(mm))
    frees = world.monitor.recorder.records[id(handle.subscription)]

    def torn_down(of: MM) -> dict[int, int]:
        world.monitor.detached("gntdev", handle)
        exerciser.detach(handle)
        world.kernel.srcu.barrier()  # the put's free after the grace period has run
        assert frees.frees == 1
        raise RuntimeError("the device state the read went through was freed")

    monkeypatch.setattr(exerciser, "translations", torn_down)
    checks = world.quiescent_checks
    check_quiescent(world, mm)
    assert world.stats["gntdev"].violations == [] and world.quiescent_checks == checks


def test_a_read_that_fails_with_nothing_changed_under_the_mm_propagates(
        world: JobWorld, attached: tuple[MM, int], monkeypatch: pytest.MonkeyPatch) -> None:
    mm, _ = attached

    def broken(of: MM) -> dict[int, int]:
        raise RuntimeError("a driver bug in its translations")

    monkeypatch.setattr(world.exercisers["gntdev"], "translations", broken)
    with pytest.raises(RuntimeError, match="a driver bug"):
        check_quiescent(world, mm)
