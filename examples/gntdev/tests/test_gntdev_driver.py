"""Unit tests of the example gntdev driver: the get/put conversion and the 5.4 invalidation rules."""

from __future__ import annotations

import errno

import pytest

import mmu_notifier as mn
from mmu_notifier import kmem, notifier
from mmu_notifier.errors import BadAddressError, ConfigError, InvalidArgumentError
from mmu_notifier.range import Event, Range
from mmu_notifier.scenarios import kernel_clean
from mmu_notifier_gntdev import GntdevConfig, GntdevDriver, GntdevExerciser, GntdevMM

PAGE = 4096


@pytest.fixture
def kernel() -> mn.Kernel:
    return mn.Kernel(frames=256)


@pytest.fixture
def gntdev(kernel: mn.Kernel) -> GntdevDriver:
    driver = GntdevDriver()
    kernel.drivers.add(driver)
    return driver


@pytest.fixture
def ex(kernel: mn.Kernel, gntdev: GntdevDriver) -> GntdevExerciser:
    ops = kernel.drivers.ops_of(gntdev)
    assert ops.exerciser is not None
    exerciser: GntdevExerciser = ops.exerciser(kernel)
    return exerciser


def test_every_open_of_an_mm_shares_one_notifier(kernel: mn.Kernel, gntdev: GntdevDriver) -> None:
    mm = mn.MM(kernel)
    first, second = gntdev.gntdev_open(mm), gntdev.gntdev_open(mm)
    assert first.gmm is second.gmm
    assert first.gmm.users == 2
    other = gntdev.gntdev_open(mn.MM(kernel))
    assert other.gmm is not first.gmm
    gntdev.gntdev_release(first)
    assert second.gmm.users == 1 and second.gmm.linked
    gmm = second.gmm
    gntdev.gntdev_release(second)
    container = mm.mmu_notifier_mm
    assert container is not None and container.find(kernel.drivers.ops_of(gntdev)) is None  # unlinked at once
    mn.synchronize(kernel)
    assert kmem.is_freed(gmm)
    gntdev.gntdev_release(other)
    mn.synchronize(kernel)
    kernel_clean(kernel)  # no WARN, no deferred callback raised


def test_invalidation_unmaps_only_the_overlap(kernel: mn.Kernel, ex: GntdevExerciser) -> None:
    mm = mn.MM(kernel)
    handle = ex.attach(mm)
    start = mm.mmap(4 * PAGE)
    ex.map_range(handle, start, start + 4 * PAGE)
    frames = [ex.access(handle, start + i * PAGE) for i in range(4)]
    assert None not in frames
    mm.madvise_dontneed(start + PAGE, 2 * PAGE)
    assert sorted(ex.translations(mm)) == [start // PAGE, start // PAGE + 3]
    ex.detach(handle)
    assert ex.translations(mm) == {}
    ex.unload()


def test_nonblockable_refuses_when_a_map_overlaps(kernel: mn.Kernel, ex: GntdevExerciser) -> None:
    mm = mn.MM(kernel)
    handle = ex.attach(mm)
    granted = mm.mmap(2 * PAGE)
    plain = mm.mmap(2 * PAGE)
    ex.map_range(handle, granted, granted + 2 * PAGE)
    ex.access(handle, granted)
    mm.fault(plain, write=True)
    assert mm.oom_reap() is False  # the granted VMA is refused, the plain one reaped
    assert mm.page_table.lookup(plain // PAGE) is None
    assert ex.translations(mm) == {granted // PAGE: mm.page_table.entries[granted // PAGE].pfn}
    ex.detach(handle)
    ex.unload()
    assert not kernel.warnings


def test_nonblockable_refuses_when_the_lock_is_contended(kernel: mn.Kernel, ex: GntdevExerciser) -> None:
    mm = mn.MM(kernel)
    handle = ex.attach(mm)
    gmm: GntdevMM = handle.subscription  # type: ignore[assignment]
    rng = Range(mm, 0, PAGE, Event.UNMAP)
    with gmm.lock:
        assert notifier.invalidate_range_start_nonblock(rng) == -errno.EAGAIN
    assert notifier.invalidate_range_start_nonblock(rng) == 0
    notifier.invalidate_range_end(rng)
    ex.detach(handle)
    ex.unload()


def test_a_mapping_racing_an_invalidation_is_retried(kernel: mn.Kernel, ex: GntdevExerciser) -> None:
    mm = mn.MM(kernel)
    handle = ex.attach(mm)
    start = mm.mmap(PAGE)
    ex.map_range(handle, start, start + PAGE)
    rng = Range(mm, start, start + PAGE, Event.CLEAR)
    notifier.invalidate_range_start(rng)
    assert ex.access(handle, start) is None  # between start and end: no new mapping in the range
    notifier.invalidate_range_end(rng)
    assert ex.access(handle, start) == mm.page_table.entries[start // PAGE].pfn
    ex.detach(handle)
    ex.unload()


def test_release_unmaps_everything_and_maps_nothing_more(kernel: mn.Kernel, ex: GntdevExerciser) -> None:
    mm = mn.MM(kernel)
    handle = ex.attach(mm)
    start = mm.mmap(2 * PAGE)
    ex.map_range(handle, start, start + 2 * PAGE)
    ex.access(handle, start)
    mm.exit()
    assert ex.translations(mm) == {}
    assert ex.access(handle, start) is None
    with pytest.raises(BadAddressError):
        ex.map_range(handle, start, start + PAGE)
    ex.detach(handle)  # close after exit: still exactly one free
    mn.synchronize(kernel)
    assert kmem.is_freed(handle.subscription)
    assert mm.freed
    kernel_clean(kernel)


def test_the_limit_parameter(kernel: mn.Kernel) -> None:
    driver = GntdevDriver(GntdevConfig(limit=2))
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    priv = driver.gntdev_open(mm)
    start = mm.mmap(3 * PAGE)
    with pytest.raises(InvalidArgumentError):
        driver.ioctl_map_grant_ref(priv, start, start + 3 * PAGE)
    driver.ioctl_map_grant_ref(priv, start, start + 2 * PAGE)
    driver.gntdev_release(priv)
    mn.synchronize(kernel)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="limit"):
        mn.config.validate("gntdev", GntdevConfig, {"limit": 0})
    assert GntdevConfig().limit == 65536


def test_loads_through_its_entry_point() -> None:
    kernel = mn.Kernel(frames=16)
    report = kernel.drivers.load_entry_points(only=["gntdev"])
    assert list(report.loaded) == ["gntdev"], report.failed
