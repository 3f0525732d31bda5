"""Invalidation and young/change_pte dispatch (kernel-semantics.md sections 2.9-2.10)."""

from __future__ import annotations

import errno

import pytest
from recording import RecordingDriver

import mmu_notifier as mn
from mmu_notifier import notifier
from mmu_notifier.range import Event, Range


def _second(kernel, refuse=False):
    other = RecordingDriver(refuse_nonblock=refuse)
    kernel.drivers.add(other, name="second")
    return other


def test_start_and_end_are_paired_with_invalidate_range_before_end(kernel, driver, mm):
    sub = mn.get(driver, mm)
    addr = mm.mmap(2 * 4096)
    mm.munmap(addr, 2 * 4096)
    kinds = [entry[0] for entry in driver.log if entry[1] == id(sub)]
    assert kinds == ["start", "invalidate_range", "end"]
    start = driver.calls("start")[0]
    assert start[2:] == (Event.UNMAP, addr, addr + 2 * 4096, True)


def test_blockable_flag_is_set_by_the_dispatcher(kernel, driver, mm):
    mn.get(driver, mm)
    rng = Range(mm, 0, 4096, Event.CLEAR, flags=0)
    notifier.invalidate_range_start(rng)
    assert rng.blockable
    notifier.invalidate_range_end(rng)


def test_nonblock_refusal_is_reported_and_no_end_is_sent(kernel, mm):
    refusing = RecordingDriver(refuse_nonblock=True)
    kernel.drivers.add(refusing, name="refusing")
    accepting = _second(kernel)
    mn.get(refusing, mm)
    mn.get(accepting, mm)
    rng = Range(mm, 0, 4096, Event.UNMAP, flags=1)
    assert notifier.invalidate_range_start_nonblock(rng) == -errno.EAGAIN
    assert not rng.blockable
    # every subscription was still offered the start; nobody gets an end
    assert len(refusing.calls("start")) == 1 and len(accepting.calls("start")) == 1
    assert refusing.calls("end") == [] and accepting.calls("end") == []
    assert kernel.warnings == []


def test_end_after_failed_start_switch_sends_end_to_everyone(mm):
    kernel = mm.kernel
    kernel.end_after_failed_start = True
    refusing = RecordingDriver(refuse_nonblock=True)
    kernel.drivers.add(refusing, name="refusing")
    accepting = _second(kernel)
    mn.get(refusing, mm)
    mn.get(accepting, mm)
    rng = Range(mm, 0, 4096, Event.UNMAP)
    assert notifier.invalidate_range_start_nonblock(rng) == -errno.EAGAIN
    assert len(accepting.calls("end")) == 1
    # a refusing driver that has an end callback is what later kernels WARN about
    assert any("has an end callback" in warning for warning in kernel.warnings)


def test_refusal_of_blockable_range_is_a_warning(kernel, mm):
    class Rude(RecordingDriver):
        @mn.hookimpl
        def invalidate_range_start(self, subscription, range):
            return -errno.EAGAIN

    rude = Rude()
    kernel.drivers.add(rude, name="rude")
    mn.get(rude, mm)
    addr = mm.mmap(4096)
    mm.munmap(addr, 4096)
    assert len(kernel.warnings) == 1 and "blockable" in kernel.warnings[0]


def test_sleeping_in_nonblockable_callback_is_caught(kernel, mm):
    lock = mn.sync.Mutex("driver.lock")

    class Sleeper(RecordingDriver):
        @mn.hookimpl
        def invalidate_range_start(self, subscription, range):
            with lock:
                return 0

    sleeper = Sleeper()
    kernel.drivers.add(sleeper, name="sleeper")
    mn.get(sleeper, mm)
    with pytest.raises(mn.SleepInAtomicError, match="non-blockable"):
        notifier.invalidate_range_start_nonblock(Range(mm, 0, 4096, Event.UNMAP))
    # the same callback is fine in a blockable range
    notifier.invalidate_range_start(Range(mm, 0, 4096, Event.UNMAP))


def test_oom_reap_skips_vma_a_driver_refused(kernel, mm):
    refusing = RecordingDriver(refuse_nonblock=True)
    kernel.drivers.add(refusing, name="refusing")
    mn.get(refusing, mm)
    addr = mm.mmap(4096)
    mm.fault(addr, write=True)
    assert mm.oom_reap() is False
    assert len(mm.page_table) == 1  # nothing was unmapped under the refusing driver


def test_oom_reap_unmaps_when_nobody_refuses(kernel, driver, mm):
    mn.get(driver, mm)
    addr = mm.mmap(4096)
    mm.fault(addr, write=True)
    assert mm.oom_reap() is True
    assert len(mm.page_table) == 0
    assert driver.calls("start")[0][5] is False  # non-blockable


def test_young_callbacks_combine_like_the_kernel(kernel, driver, mm):
    other = _second(kernel)
    mn.get(driver, mm)
    mn.get(other, mm)
    addr = mm.mmap(4096)
    mm.fault(addr)
    mm.clear_young(addr)  # CPU young bit now clear
    driver.young, other.young = 0, 1
    assert notifier.clear_flush_young(mm, addr, addr + 4096) == 1  # OR over all
    assert len(driver.calls("clear_flush_young")) == 1 and len(other.calls("clear_flush_young")) == 1
    # test_young stops at the first non-zero answer in list order (most recent first)
    assert notifier.test_young(mm, addr) == 1
    assert driver.calls("test_young") == []
    other.young = 0
    assert mm.test_young(addr) is False
    driver.young = 1
    assert mm.clear_flush_young(addr) is True


def test_cpu_young_bit_counts_in_page_aging(kernel, driver, mm):
    mn.get(driver, mm)
    addr = mm.mmap(4096)
    mm.fault(addr)
    assert mm.test_young(addr) is True
    assert mm.clear_flush_young(addr) is True
    assert mm.clear_flush_young(addr) is False


def test_invalidate_range_alone_reaches_every_subscription(kernel, driver, mm):
    other = _second(kernel)
    mn.get(driver, mm)
    mn.get(other, mm)
    notifier.invalidate_range(mm, 0, 4096)
    assert driver.calls("invalidate_range") and other.calls("invalidate_range")


def test_only_end_skips_invalidate_range(kernel, driver, mm):
    mn.get(driver, mm)
    rng = Range(mm, 0, 4096, Event.CLEAR)
    notifier.invalidate_range_start(rng)
    notifier.invalidate_range_only_end(rng)
    assert driver.calls("invalidate_range") == [] and len(driver.calls("end")) == 1


def test_unlinked_subscription_gets_no_callbacks(kernel, driver, mm):
    sub = mn.get(driver, mm)
    mn.put(sub)
    mm.munmap(mm.mmap(4096), 4096)
    assert [entry for entry in driver.log if entry[0] in ("start", "end")] == []


def test_callback_may_put_inside_dispatch(kernel, mm):
    class PutsItself(RecordingDriver):
        @mn.hookimpl
        def invalidate_range_start(self, subscription, range):
            mn.put(subscription)
            return 0

    driver = PutsItself()
    kernel.drivers.add(driver, name="self-put")
    mn.get(driver, mm)
    mm.munmap(mm.mmap(4096), 4096)
    mn.synchronize(kernel)
    assert len(driver.freed) == 1 and kernel.bugs == []


def test_dispatch_without_container_is_a_no_op(mm):
    rng = Range(mm, 0, 4096, Event.CLEAR)
    notifier.invalidate_range_start(rng)
    assert notifier.invalidate_range_start_nonblock(rng) == 0
    notifier.invalidate_range_end(rng)
    assert notifier.clear_young(mm, 0, 4096) == 0 and notifier.test_young(mm, 0) == 0


def test_free_notifier_that_sleeps_is_recorded_as_bug(kernel, mm):
    lock = mn.sync.Mutex("driver.lock")

    class SleepyFree(RecordingDriver):
        @mn.hookimpl
        def free_notifier(self, subscription):
            with lock:
                pass

    sleepy = SleepyFree()
    kernel.drivers.add(sleepy, name="sleepy")
    mn.put(mn.get(sleepy, mm))
    mn.synchronize(kernel)
    assert len(kernel.bugs) == 1 and isinstance(kernel.bugs[0], mn.SleepInAtomicError)
