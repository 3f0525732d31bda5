"""Invalidation start/end/release of the 5.4 per_mm: the lock held from start to end, refusals, release."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

import mmu_notifier as mn
from mmu_notifier import Event, Range, notifier

from .conftest import PAGE, World


def _range(w: World, start: int, end: int) -> Range:
    return Range(w.mm, start, end, Event.CLEAR)


def test_umem_rwsem_is_held_for_read_from_start_to_end(make: Callable[..., World]) -> None:
    w = make()
    data = w.mm.mmap(2 * PAGE)
    mr = w.open().reg_mr(data, PAGE)
    per_mm = mr.umem.per_mm
    assert per_mm is not None
    rng = _range(w, data, data + 2 * PAGE)
    notifier.invalidate_range_start(rng)
    assert mn.sync.current() in per_mm.umem_rwsem.readers
    assert mr.umem.notifiers_count == 1 and not mr.umem.notifier_completion.is_done()
    notifier.invalidate_range_end(rng)
    assert per_mm.umem_rwsem.readers == []
    assert mr.umem.notifiers_count == 0 and mr.umem.notifiers_seq == 1
    assert mr.umem.notifier_completion.is_done()


def test_completion_rearmed_only_on_the_first_start(make: Callable[..., World]) -> None:
    w = make()
    data = w.mm.mmap(PAGE)
    umem = w.open().reg_mr(data, PAGE).umem
    outer, inner = _range(w, data, data + PAGE), _range(w, data, data + PAGE)
    notifier.invalidate_range_start(outer)
    notifier.invalidate_range_start(inner)  # nested: the read side twice, no writer waiting
    assert umem.notifiers_count == 2
    notifier.invalidate_range_end(inner)
    assert umem.notifiers_count == 1 and not umem.notifier_completion.is_done(), "completes only at zero"
    notifier.invalidate_range_end(outer)
    assert umem.notifiers_count == 0 and umem.notifiers_seq == 2 and umem.notifier_completion.is_done()


def test_nonblockable_refusal_is_all_or_nothing_and_drops_the_lock(make: Callable[..., World]) -> None:
    w = make()
    data = w.mm.mmap(3 * PAGE)
    first, second = w.open(0), w.open(1)
    mr1 = first.reg_mr(data, PAGE)
    mr2 = second.reg_mr(data + 2 * PAGE, PAGE)
    for mr, device in ((mr1, w.devices[0]), (mr2, w.devices[1])):
        device.page_fault(mr, mr.umem.start, True)
    per_mm = mr1.umem.per_mm
    assert per_mm is not None
    rng = _range(w, data, data + 3 * PAGE)
    assert notifier.invalidate_range_start_nonblock(rng) == -errno.EAGAIN
    assert mr1.umem.notifiers_count == 0 and mr2.umem.notifiers_count == 0, "no umem touched"
    assert len(w.translations()) == 2, "no MTT zapped"
    assert per_mm.umem_rwsem.readers == [], "the refusal dropped umem_rwsem"
    # a non-blockable range that overlaps nothing succeeds and keeps the lock until its end
    gap = _range(w, data + PAGE, data + 2 * PAGE)
    assert notifier.invalidate_range_start_nonblock(gap) == 0
    assert per_mm.umem_rwsem.readers == [mn.sync.current()]
    notifier.invalidate_range_end(gap)
    assert per_mm.umem_rwsem.readers == []


def test_missed_unlock_switch_keeps_the_lock(make: Callable[..., World]) -> None:
    w = make(bug_missed_unlock=True)
    data = w.mm.mmap(PAGE)
    per_mm = w.open().reg_mr(data, PAGE).umem.per_mm
    assert per_mm is not None
    assert not w.mm.oom_reap()
    assert per_mm.umem_rwsem.readers == [mn.sync.current()], "H-2: the reaper returned holding umem_rwsem"


def test_dead_per_mm_returns_early_and_end_skips_the_unlock(make: Callable[..., World]) -> None:
    """users == 0 (after the last put, before the free): start unlocks and returns 0, end does nothing."""
    w = make()
    data = w.mm.mmap(PAGE)
    ctx = w.open()
    per_mm = ctx.reg_mr(data, PAGE).umem.per_mm
    assert per_mm is not None
    index = w.kernel.srcu.read_lock()  # hold off the free
    ctx.close()
    assert per_mm.users == 0
    rng = _range(w, data, data + PAGE)
    rng.flags |= mn.range.RANGE_BLOCKABLE
    assert per_mm.invalidate_range_start(rng) == 0
    assert per_mm.umem_rwsem.readers == []
    per_mm.invalidate_range_end(rng)
    assert per_mm.umem_rwsem.readers == []
    w.kernel.srcu.read_unlock(index)


def test_release_blocks_every_umem_and_later_faults(make: Callable[..., World]) -> None:
    w = make()
    data = w.mm.mmap(2 * PAGE)
    ctx = w.open()
    mr = ctx.reg_mr(data, 2 * PAGE)
    w.devices[0].page_fault(mr, data, True)
    assert w.translations()
    w.driver.process_exit(w.mm)
    umem = mr.umem
    assert umem.notifiers_count == 1, "release's start_account is never matched"
    assert umem.notifier_completion.is_done(), "waiters were woken"
    assert w.translations() == {} and umem.npages == 0
    with pytest.raises(mn.InvalidArgumentError, match="exited"):
        w.devices[0].page_fault(mr, data + PAGE, True)
    assert w.translations() == {}
    ctx.close()
    mn.synchronize(w.kernel)
    assert w.mm.freed and w.kernel.warnings == []


def test_fault_racing_an_invalidation_waits_then_returns_eagain(make: Callable[..., World]) -> None:
    w = make(fault_timeout_ms=0)
    data = w.mm.mmap(PAGE)
    mr = w.open().reg_mr(data, PAGE)
    rng = _range(w, data, data + PAGE)
    notifier.invalidate_range_start(rng)
    with pytest.raises(mn.TryAgainError):
        w.devices[0].page_fault(mr, data, True)
    assert w.translations() == {}, "no MTT while the invalidation is in flight"
    assert any("timeout waiting for mmu notifier" in warning for warning in w.kernel.warnings)
    notifier.invalidate_range_end(rng)
    pfn = w.devices[0].page_fault(mr, data, True)
    assert w.translations() == {data // PAGE: pfn}


def test_read_fault_maps_read_only_and_write_dirties_on_unmap(make: Callable[..., World]) -> None:
    w = make()
    data = w.mm.mmap(2 * PAGE)
    mr = w.open().reg_mr(data, 2 * PAGE)
    w.devices[0].page_fault(mr, data, False)
    w.devices[0].page_fault(mr, data + PAGE, True)
    assert mr.mtt[0][1] is False and mr.mtt[1][1] is True
    w.mm.madvise_dontneed(data, 2 * PAGE)
    assert mr.umem.dirtied == 1


def test_mtt_capacity(make: Callable[..., World]) -> None:
    w = make(mtt_capacity=1)
    data = w.mm.mmap(2 * PAGE)
    mr = w.open().reg_mr(data, 2 * PAGE)
    w.devices[0].page_fault(mr, data, True)
    with pytest.raises(mn.NoMemoryError, match="MTT"):
        w.devices[0].page_fault(mr, data + PAGE, True)
    assert not mr.umem.umem_mutex.held_by_current()


def test_nonblockable_start_refused_while_a_writer_holds_umem_rwsem(make: Callable[..., World]) -> None:
    """The trylock fails while a umem is being created or destroyed, even when nothing overlaps."""
    w = make()
    data = w.mm.mmap(2 * PAGE)
    mr = w.open().reg_mr(data, PAGE)
    per_mm = mr.umem.per_mm
    assert per_mm is not None
    gap = _range(w, data + PAGE, data + 2 * PAGE)
    per_mm.umem_rwsem.down_write()
    try:
        assert notifier.invalidate_range_start_nonblock(gap) == -errno.EAGAIN
    finally:
        per_mm.umem_rwsem.up_write()
    assert per_mm.umem_rwsem.readers == []
    assert notifier.invalidate_range_start_nonblock(gap) == 0
    notifier.invalidate_range_end(gap)
