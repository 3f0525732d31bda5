"""gntdev ``scheme = "5.5"``: one interval notifier per grant map, removed at close; no per-mm object."""

from __future__ import annotations

import mmu_notifier as mn
from mmu_notifier import kmem, notifier
from mmu_notifier.range import Event, Range
from mmu_notifier_gntdev import GntdevConfig, GntdevDriver, GntdevExerciser

PAGE = 4096


def _setup() -> tuple[mn.Kernel, GntdevDriver, GntdevExerciser]:
    kernel = mn.Kernel(frames=256)
    driver = GntdevDriver(GntdevConfig(scheme="5.5"))
    ops = kernel.drivers.add(driver)
    assert ops.exerciser is not None
    return kernel, driver, ops.exerciser(kernel)


def test_the_ops_hold_only_the_interval_callback() -> None:
    kernel, driver, _ = _setup()
    ops = kernel.drivers.ops_of(driver)
    assert ops.invalidate is not None
    assert all(getattr(ops, name) is None for name in GntdevDriver.LIST_CALLBACKS)
    four = mn.Kernel(frames=16)
    ops54 = four.drivers.add(GntdevDriver())
    assert ops54.invalidate is None and ops54.alloc_notifier is not None


def test_each_grant_map_is_one_interval_notifier_removed_at_close() -> None:
    kernel, _, ex = _setup()
    mm = mn.MM(kernel)
    handle = ex.attach(mm)
    assert handle.subscription is None and mm.mmu_notifier_mm is None  # open registers nothing
    first = mm.mmap(2 * PAGE)
    second = mm.mmap(3 * PAGE)
    ex.map_range(handle, first, first + 2 * PAGE)
    ex.map_range(handle, second, second + 3 * PAGE)
    assert mm.mmu_notifier_mm is not None and mm.mmu_notifier_mm.interval is not None
    tree = list(mm.mmu_notifier_mm.interval.itree)
    assert [(s.start, s.last) for s in tree] == [(first, first + 2 * PAGE - 1), (second, second + 3 * PAGE - 1)]
    assert ex.access(handle, first) is not None and ex.access(handle, second + PAGE, write=True) is not None
    subs = list(handle.state.notifiers)
    ex.detach(handle)
    assert not list(mm.mmu_notifier_mm.interval.itree) and all(kmem.is_freed(s) for s in subs)
    assert not ex.translations(mm)
    mm.exit()
    ex.unload()


def test_an_invalidation_unmaps_only_its_part_and_refuses_non_blockable() -> None:
    kernel, _, ex = _setup()
    mm = mn.MM(kernel)
    handle = ex.attach(mm)
    start = mm.mmap(4 * PAGE)
    ex.map_range(handle, start, start + 4 * PAGE)
    for page in range(4):
        assert ex.access(handle, start + page * PAGE, write=True) is not None
    refused = Range(mm, start, start + PAGE, Event.UNMAP)
    assert notifier.invalidate_range_start_nonblock(refused) < 0  # unmapping a grant may sleep
    assert len(ex.translations(mm)) == 4
    mm.madvise_dontneed(start + PAGE, PAGE)
    assert sorted(ex.translations(mm)) == [start >> 12, (start >> 12) + 2, (start >> 12) + 3]
    ex.detach(handle)
    mm.exit()
    ex.unload()


def test_exit_unmaps_every_grant_through_the_cores_release_range() -> None:
    kernel, _, ex = _setup()
    mm = mn.MM(kernel)
    handle = ex.attach(mm)
    start = mm.mmap(2 * PAGE)
    ex.map_range(handle, start, start + 2 * PAGE)
    assert ex.access(handle, start) is not None
    mm.exit()
    assert not ex.translations(mm)
    ex.detach(handle)  # the removes after exit
    ex.unload()
