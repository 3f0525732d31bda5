"""Registration rules of the get/put scheme (kernel-semantics.md sections 2.1-2.6 and 7)."""

from __future__ import annotations

import pytest
from recording import RecordingDriver, RecordingSub

import mmu_notifier as mn
from mmu_notifier.kmem import is_freed


def test_get_returns_same_subscription_for_same_driver_and_mm(kernel, driver, mm):
    first = mn.get(driver, mm)
    second = mn.get(driver, mm)
    assert first is second
    assert first.users == 2
    assert len(driver.calls("alloc")) == 1


def test_get_returns_different_subscription_for_another_mm_or_driver(kernel, driver, mm):
    other_driver = RecordingDriver()
    kernel.drivers.add(other_driver, name="other")
    other_mm = mn.MM(kernel)
    sub = mn.get(driver, mm)
    assert mn.get(driver, other_mm) is not sub
    assert mn.get(other_driver, mm) is not sub
    assert len(mm.mmu_notifier_mm.subscriptions) == 2


def test_no_container_before_first_registration(driver, mm):
    assert mm.mmu_notifier_mm is None
    mn.get(driver, mm)
    assert mm.mmu_notifier_mm is not None


def test_alloc_failure_leaves_nothing(kernel, mm):
    class Failing(RecordingDriver):
        @mn.hookimpl
        def alloc_notifier(self, mm):
            raise mn.NoMemoryError("device out of memory")

    failing = Failing()
    kernel.drivers.add(failing, name="failing")
    with pytest.raises(mn.NoMemoryError):
        mn.get(failing, mm)
    assert mm.mmu_notifier_mm is None
    assert mm.mm_count.value == 1
    assert not failing.calls("free")


def test_failed_registration_frees_synchronously(kernel, driver, mm):
    # registration fails after alloc_notifier (the container's allocation fails): the fresh object is freed at once
    kernel.faults.inject("mmu_notifier.register.alloc", nth=1)
    with pytest.raises(mn.NoMemoryError):
        mn.get(driver, mm)
    assert len(driver.calls("alloc")) == 1
    assert len(driver.freed) == 1
    assert is_freed(driver.allocated[0])


def test_get_overflow_fails_with_eoverflow_and_changes_nothing(mm):
    kernel = mm.kernel
    kernel.users_limit = 3
    driver = RecordingDriver()
    kernel.drivers.add(driver)
    sub = mn.get(driver, mm)
    mn.get(driver, mm)
    mn.get(driver, mm)
    with pytest.raises(mn.RefcountOverflowError) as caught:
        mn.get(driver, mm)
    assert caught.value.kernel_return == -75  # -EOVERFLOW
    assert sub.users == 3
    assert len(driver.calls("alloc")) == 1


def test_get_locked_without_mmap_lock_raises(driver, mm):
    with pytest.raises(mn.MisuseError, match="mmap lock"):
        mn.get_locked(driver, mm)
    mm.mmap_lock.down_write()
    try:
        assert mn.get_locked(driver, mm).users == 1
    finally:
        mm.mmap_lock.up_write()


def test_put_defers_free_past_grace_period_and_drops_mm_pin(kernel, driver, mm):
    sub = mn.get(driver, mm)
    assert mm.mm_count.value == 2
    index = kernel.srcu.read_lock()  # a walker active at put time
    mn.put(sub)
    assert not sub.linked
    assert mm.mmu_notifier_mm.find(kernel.drivers.ops_of(driver)) is None
    kernel.srcu.read_unlock(index)
    mn.synchronize(kernel)
    assert driver.freed == [id(sub)]
    assert mm.mm_count.value == 1


def test_free_runs_only_after_reader_active_at_put_has_left(kernel, driver, mm):
    import threading

    sub = mn.get(driver, mm)
    entered, leave = threading.Event(), threading.Event()

    def reader():
        with kernel.srcu.read_section():
            entered.set()
            leave.wait(5)

    thread = threading.Thread(target=reader)
    thread.start()
    entered.wait(5)
    mn.put(sub)
    # give the callback worker every chance to run too early
    for _ in range(50):
        threading.Event().wait(0.001)
    assert driver.freed == []
    leave.set()
    thread.join()
    mn.synchronize(kernel)
    assert driver.freed == [id(sub)]


def test_free_runs_once(kernel, driver, mm):
    sub = mn.get(driver, mm)
    mn.get(driver, mm)
    mn.put(sub)
    mn.put(sub)
    mn.synchronize(kernel)
    mn.synchronize(kernel)
    assert driver.freed == [id(sub)]


def test_get_after_last_put_is_new(kernel, driver, mm):
    old = mn.get(driver, mm)
    mn.put(old)
    new = mn.get(driver, mm)  # the old free may still be pending
    assert new is not old
    assert new.users == 1
    mn.synchronize(kernel)
    assert new.linked and is_freed(old)


def test_put_with_no_users_raises_and_changes_nothing(kernel, driver, mm):
    sub = mn.get(driver, mm)
    index = kernel.srcu.read_lock()
    mn.put(sub)
    with pytest.raises(mn.MisuseError, match="no users"):
        mn.put(sub)
    assert sub.users == 0
    kernel.srcu.read_unlock(index)
    mn.synchronize(kernel)
    assert len(driver.freed) == 1


def test_put_of_freed_subscription_raises_use_after_free(kernel, driver, mm):
    sub = mn.get(driver, mm)
    mn.put(sub)
    mn.synchronize(kernel)
    with pytest.raises(mn.UseAfterFreeError, match="freed at"):
        mn.put(sub)
    assert len(driver.freed) == 1


def test_put_of_unregistered_subscription_raises(driver):
    with pytest.raises(mn.MisuseError, match="never registered"):
        mn.put(RecordingSub())


def test_release_once_on_exit_and_put_after_release_frees_once(kernel, driver, mm):
    sub = mn.get(driver, mm)
    mm.exit()
    assert driver.calls("release") == [("release", id(sub), mm.id)]
    assert not sub.linked and sub.users == 1
    assert mm.mm_count.value == 1  # only the subscription still pins the mm_struct
    mn.put(sub)
    mn.synchronize(kernel)
    assert driver.freed == [id(sub)]
    assert mm.mm_count.value == 0 and mm.freed
    assert driver.calls("release") == [("release", id(sub), mm.id)]


def test_release_precedes_free_when_mm_exits_first(kernel, driver, mm):
    sub = mn.get(driver, mm)
    mm.exit()
    mn.put(sub)
    mn.synchronize(kernel)
    kinds = [entry[0] for entry in driver.log]
    assert kinds.index("release") < kinds.index("free")


def test_put_never_calls_release(kernel, driver, mm):
    mn.put(mn.get(driver, mm))
    mn.synchronize(kernel)
    assert driver.calls("release") == []


def test_synchronize_waits_for_pending_frees(kernel, driver, mm):
    subs = [mn.get(driver, mn.MM(kernel)) for _ in range(5)]
    for sub in subs:
        mn.put(sub)
    mn.synchronize(kernel)
    assert sorted(driver.freed) == sorted(id(s) for s in subs)
    assert kernel.srcu.pending_callbacks() == 0


def test_register_then_put_frees_like_amdkfd(kernel, driver, mm):
    sub = RecordingSub()
    mn.register(sub, mm, driver=driver)
    assert sub.users == 1 and sub.mm is mm
    assert mn.get(driver, mm) is sub  # found by get with the same ops
    mn.put(sub)
    mn.put(sub)
    mn.synchronize(kernel)
    assert driver.freed == [id(sub)]


def test_unregister_calls_release_if_linked_and_drops_pin(kernel, driver, mm):
    sub = RecordingSub()
    mn.register(sub, mm, driver=driver)
    mn.unregister(sub, mm)
    assert driver.calls("release") == [("release", id(sub), mm.id)]
    assert mm.mm_count.value == 1
    assert driver.freed == []  # unregister never frees: the caller owns the memory


def test_unregister_after_exit_does_not_release_again(kernel, driver, mm):
    sub = RecordingSub()
    mn.register(sub, mm, driver=driver)
    mm.mmget()
    mm.exit()
    mm.mmput()
    mn.unregister(sub, mm)
    assert len(driver.calls("release")) == 1


def test_unregister_inside_read_section_is_a_deadlock(kernel, driver, mm):
    sub = RecordingSub()
    mn.register(sub, mm, driver=driver)
    with kernel.srcu.read_section(), pytest.raises(mn.DeadlockError):
        mn.unregister(sub, mm)


def test_register_order_is_reverse_dispatch_order(kernel, mm):
    order: list[str] = []

    class Ordered(RecordingDriver):
        @mn.hookimpl
        def invalidate_range_start(self, subscription, range):
            order.append(self.label)
            return 0

    for label in ("first", "second", "third"):
        ordered = Ordered()
        ordered.label = label
        kernel.drivers.add(ordered, name=label)
        mn.get(ordered, mm)
    addr = mm.mmap(4096)
    mm.munmap(addr, 4096)
    assert order == ["third", "second", "first"]


def test_mm_count_balances_to_zero(kernel, driver, mm):
    subs = [mn.get(driver, mm), mn.get(driver, mm)]
    plain = RecordingSub()
    other = RecordingDriver()
    kernel.drivers.add(other, name="plain")
    mn.register(plain, mm, driver=other)
    assert mm.mm_count.value == 3
    mn.unregister(plain, mm)
    for sub in subs:
        mn.put(sub)
    mn.synchronize(kernel)
    mm.exit()
    assert mm.mm_count.value == 0 and mm.freed
    assert mm.mm_users.value == 0


def test_core_never_changes_mm_users(kernel, driver, mm):
    sub = mn.get(driver, mm)
    mm.munmap(mm.mmap(4096), 4096)
    mn.put(sub)
    mn.synchronize(kernel)
    assert mm.mm_users.value == 1


def test_double_registration_of_same_object_raises(driver, mm):
    sub = RecordingSub()
    mn.register(sub, mm, driver=driver)
    with pytest.raises(mn.MisuseError, match="already registered"):
        mn.register(sub, mm, driver=driver)
