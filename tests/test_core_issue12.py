"""Issue 12: nested invalidation, module unload, fault injection and the fidelity fixes.

Each test names the kernel function whose behaviour it checks.
"""

from __future__ import annotations

from typing import Any

import pytest
from recording import RecordingDriver, RecordingSub

import mmu_notifier as mn

PAGE = 4096
HUGE = 512 * PAGE


class NestingDriver(RecordingDriver):
    """Records the depth of invalidations in flight in the task when each start and end arrives."""

    name = "nesting"

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.trace: list[tuple[Any, ...]] = []

    @mn.hookimpl
    def invalidate_range_start(self, subscription: Any, range: mn.Range) -> int:
        self.depth += 1
        self.trace.append(("start", self.depth, range.start, range.end, mn.sync.current().name))
        assert range.event is mn.Event.CLEAR
        return 0

    @mn.hookimpl
    def invalidate_range_end(self, subscription: Any, range: mn.Range) -> None:
        self.trace.append(("end", self.depth, range.start, range.end, mn.sync.current().name))
        self.depth -= 1

    @mn.hookimpl
    def invalidate_range(self, subscription: Any, mm: mn.MM, start: int, end: int) -> None:
        self.trace.append(("invalidate_range", self.depth, start, end, mn.sync.current().name))


def test_zap_page_range_splitting_a_huge_page_nests_a_second_invalidation(kernel):
    """``zap_page_range`` -> ``__split_huge_pmd``: a start/only_end pair inside the outer one, same task."""
    driver = NestingDriver()
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    base = mm.mmap(2 * HUGE, addr=1 << 33)
    mm.fault(base + HUGE + PAGE, write=True)
    mn.get(driver, mm)
    mm.madvise_dontneed(base + HUGE + PAGE, 4 * PAGE, split_huge_page=True)
    outer = (base + HUGE + PAGE, base + HUGE + 5 * PAGE)
    inner = (base + HUGE, base + 2 * HUGE)
    task = mn.sync.current().name
    assert driver.trace == [
        ("start", 1, *outer, task),
        ("start", 2, *inner, task),
        ("end", 2, *inner, task),  # only_end: no invalidate_range for the split
        ("invalidate_range", 1, *outer, task),
        ("end", 1, *outer, task),
    ]
    assert mm.page_table.lookup((base + HUGE + PAGE) >> mm.page_shift) is None


def test_madvise_without_split_does_not_nest(kernel):
    driver = NestingDriver()
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    base = mm.mmap(4 * PAGE)
    mn.get(driver, mm)
    mm.madvise_dontneed(base, PAGE)
    assert [entry[:2] for entry in driver.trace] == [("start", 1), ("invalidate_range", 1), ("end", 1)]


def test_nested_split_range_is_clipped_to_the_vma(kernel):
    driver = NestingDriver()
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    base = mm.mmap(8 * PAGE, addr=(1 << 33) + 2 * PAGE)
    mn.get(driver, mm)
    mm.madvise_dontneed(base + PAGE, PAGE, split_huge_page=True)
    starts = [entry for entry in driver.trace if entry[0] == "start"]
    assert starts[1][2:4] == (base, base + 8 * PAGE)


# -- module unload ---------------------------------------------------------------------------


def test_unload_after_synchronize_then_a_callback_is_use_after_free_of_the_module(kernel):
    """Module exit (``mmu_notifier_synchronize`` then unload): its ops are gone."""
    driver = RecordingDriver()
    ops = kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    sub = mn.get(driver, mm)
    mn.put(sub)
    kernel.drivers.unload(driver)  # synchronizes: the deferred free runs first
    assert driver.freed == [id(sub)]
    assert "recording" not in kernel.drivers.names()
    assert ops.unloaded_at is not None and "test_core_issue12.py" in ops.unloaded_at
    with pytest.raises(mn.UseAfterFreeError, match=r"recording\.invalidate_range_start called after module"):
        ops.invalidate_range_start(sub, None)
    with pytest.raises(mn.MisuseError, match="not loaded"):
        mn.get(driver, mm)


def test_unload_with_a_linked_subscription_goes_ahead_and_the_next_callback_is_a_use_after_free(kernel):
    """Nothing pins a module while its notifier is linked (5.3 radeon, bug 2 of patch 08)."""
    driver = RecordingDriver()
    ops = kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    base = mm.mmap(PAGE)
    sub = mn.get(driver, mm)
    kernel.drivers.unload(driver)
    assert ops.unloaded_at is not None and ops.linked == 1 and kernel.drivers.names() == []
    with pytest.raises(mn.UseAfterFreeError, match=r"recording\.invalidate_range_start called after module"):
        mm.munmap(base, PAGE)  # the next invalidation calls into the unloaded module
    assert sub.linked  # the subscription is still on the mm's list
    with pytest.raises(mn.MisuseError, match="not loaded"):
        kernel.drivers.unload(driver)


def test_a_walker_that_outlives_the_unload_is_reported_by_the_explorer():
    """5.3 radeon (bug I-2): unlink without a grace period, unload, a walker still calls the ops."""
    from mmu_notifier import legacy
    from mmu_notifier.explore import Kind, Scenario, ScenarioInstance, explore

    def build() -> ScenarioInstance:
        kernel = mn.Kernel(frames=64)
        driver = RecordingDriver()
        kernel.drivers.add(driver)
        mm = mn.MM(kernel)
        base = mm.mmap(PAGE)
        sub = RecordingSub()
        mn.register(sub, mm, driver=driver)
        run = ScenarioInstance()

        @run.thread("munmap")
        def munmap() -> None:
            mm.munmap(base, PAGE)

        @run.thread("rmmod")
        def rmmod() -> None:
            legacy.unregister_no_release(sub, mm)
            kernel.drivers.unload(driver)

        return run

    result = explore(Scenario("unload-under-walker", build), "random", budget=300)
    assert result.bugs, "the walker calling the unloaded module was not found"
    problem = result.bugs[0].problem
    assert problem.kind is Kind.USE_AFTER_FREE
    assert "called after module 'recording' was unloaded" in problem.message


# -- fault injection at named sites ----------------------------------------------------------


def test_register_fails_with_enomem_when_the_container_allocation_fails(kernel, driver):
    """``__mmu_notifier_register``: kmalloc of the container fails -> -ENOMEM, nothing registered."""
    mm = mn.MM(kernel)
    kernel.faults.inject("mmu_notifier.register.alloc", nth=1)
    with pytest.raises(mn.NoMemoryError) as info:
        mn.get(driver, mm)
    assert info.value.kernel_return == -12
    assert mm.mmu_notifier_mm is None and mm.mm_count.value == 1
    assert len(driver.allocated) == 1 and driver.freed == [id(driver.allocated[0])]  # freed synchronously
    sub = mn.get(driver, mm)  # once only
    assert sub.users == 1 and kernel.faults.failures("mmu_notifier.register.alloc") == [1]


def test_register_fails_with_eintr_from_mm_take_all_locks(kernel, driver):
    """``mm_take_all_locks`` sees a fatal signal -> -EINTR; the new container is dropped."""
    mm = mn.MM(kernel)
    kernel.faults.inject("mmu_notifier.register.mmap_lock", nth=1)
    sub = RecordingSub()
    with pytest.raises(mn.InterruptedCallError) as info:
        mn.register(sub, mm, driver=driver)
    assert info.value.kernel_return == -4
    assert mm.mmu_notifier_mm is None and sub.mm is None and not sub.linked
    mn.register(sub, mm, driver=driver)
    assert sub.linked
    # the container exists now: a second registration never asks the allocation site
    calls = kernel.faults.calls("mmu_notifier.register.alloc")
    mn.register(RecordingSub(), mm, driver=driver)
    assert kernel.faults.calls("mmu_notifier.register.alloc") == calls


def test_probability_faults_are_reproducible_per_seed_and_site():
    from mmu_notifier.faults import FaultInjector

    def pattern(seed: int) -> list[bool]:
        faults = FaultInjector()
        faults.inject("radeon.alloc", probability=0.5, seed=seed)
        faults.inject("other.site", probability=0.5, seed=seed)
        out = []
        for i in range(40):
            if i % 3 == 0:
                faults.should_fail("other.site")
            out.append(faults.should_fail("radeon.alloc"))
        return out

    assert pattern(1) == pattern(1)
    assert pattern(1) != pattern(2)
    assert 5 < sum(pattern(1)) < 35


def test_nth_and_probability_together_fail_when_either_says_so():
    from mmu_notifier.faults import FaultInjector

    faults = FaultInjector()
    faults.inject("d.y", nth=3, probability=0.0)
    assert [faults.should_fail("d.y") for _ in range(4)] == [False, False, True, False]
    faults.inject("d.y", nth=100, probability=1.0)
    assert all(faults.should_fail("d.y") for _ in range(5))


def test_nth_with_times_and_clear():
    from mmu_notifier.faults import FaultInjector

    faults = FaultInjector()
    faults.should_fail("d.x")
    faults.inject("d.x", nth=2, times=2)
    assert [faults.should_fail("d.x") for _ in range(5)] == [False, True, True, False, False]
    assert faults.failures("d.x") == [3, 4] and faults.calls("d.x") == 6
    faults.inject("d.x", nth=1)
    faults.clear("d.x")
    assert not faults.should_fail("d.x") and faults.armed() == []


@pytest.mark.parametrize(
    ("site", "kwargs", "message"),
    [
        ("nodot", {"nth": 1}, "must be '<owner>.<what>'"),
        ("a.b", {}, "nth= and/or probability="),
        ("a.b", {"probability": 0.5, "times": 2}, r"times \(with nth\)"),
        ("a.b", {"nth": 0}, "nth must be an int >= 1"),
        ("a.b", {"probability": 1.5}, r"probability must be in \[0, 1\]"),
        ("a.b", {"nth": 1, "times": 0}, r"times \(with nth\) must be an int >= 1"),
    ],
)
def test_bad_injection_is_a_typed_error_naming_the_site(site, kwargs, message):
    from mmu_notifier.faults import FaultInjector

    faults = FaultInjector()
    with pytest.raises(mn.InvalidArgumentError, match=message):
        faults.inject(site, **kwargs)
    assert faults.armed() == []


# -- put and unregister (fidelity fixes 10 and 11) -------------------------------------------


class NoFreeDriver(RecordingDriver):
    """A driver whose free_notifier hook is missing (registered with register, released with put)."""

    name = "nofree"
    required_hooks = ("alloc_notifier",)

    free_notifier = None  # type: ignore[assignment]


def test_put_reads_free_notifier_only_on_the_last_put(kernel):
    """``mmu_notifier_put``: ops->free_notifier is needed only when users reaches 0."""
    driver = NoFreeDriver()
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    sub = mn.get(driver, mm)
    mn.get(driver, mm)
    mn.put(sub)  # not the last: fine
    assert sub.users == 1
    with pytest.raises(mn.MisuseError, match=r"last put of .* has no free_notifier hook"):
        mn.put(sub)
    assert sub.users == 1 and sub.linked


def test_unregister_twice_is_misuse_naming_the_subscription_and_changes_nothing(kernel, driver):
    """``mmu_notifier_unregister`` twice: the second would drop mm_count on a live mm."""
    mm = mn.MM(kernel)
    sub = RecordingSub()
    mn.register(sub, mm, driver=driver)
    mn.unregister(sub, mm)
    count = mm.mm_count.value
    with pytest.raises(mn.MisuseError, match=r"unregister of <RecordingSub driver=recording .*> twice"):
        mn.unregister(sub, mm)
    assert mm.mm_count.value == count
    with pytest.raises(mn.MisuseError, match=r"put of <RecordingSub .*> after mmu_notifier_unregister"):
        mn.put(sub)
    assert mm.mm_count.value == count and sub.users == 1


# -- mprotect, COW break, the end-after-refusal switch (fidelity fixes 8, 9, 12) -------------


class VmaReader(RecordingDriver):
    """Reads the VMA and ``update_to_read_only`` when an mprotect is announced."""

    name = "vma_reader"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[mn.Prot, bool]] = []

    @mn.hookimpl
    def invalidate_range_start(self, subscription: Any, range: mn.Range) -> int:
        if range.event is mn.Event.PROTECTION_VMA:
            assert range.vma is not None
            self.seen.append((range.vma.prot, range.update_to_read_only()))
        return 0


@pytest.mark.parametrize(
    ("new", "read_only"),
    [(mn.Prot.NONE, False), (mn.Prot.READ, True), (mn.RW, True)],
    ids=["prot-none", "read-only", "read-write"],
)
def test_mprotect_sets_the_vma_flags_before_announcing_the_range(kernel, new, read_only):
    """``mprotect_fixup`` sets vm_flags, then ``change_protection`` announces PROTECTION_VMA."""
    driver = VmaReader()
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    base = mm.mmap(2 * PAGE)
    mn.get(driver, mm)
    mm.mprotect(base, 2 * PAGE, new)
    assert driver.seen == [(new, read_only)]


class TlbDriver(RecordingDriver):
    """Flushes only in ``invalidate_range``; notes the CPU entry each callback sees."""

    name = "tlb"

    def __init__(self, vpn: int) -> None:
        super().__init__()
        self.vpn = vpn
        self.order: list[tuple[str, int | None]] = []

    def _cpu(self, mm: mn.MM) -> int | None:
        pte = mm.page_table.lookup(self.vpn)
        return None if pte is None else pte.pfn

    @mn.hookimpl
    def invalidate_range_start(self, subscription: Any, range: mn.Range) -> int:
        self.order.append(("start", self._cpu(range.mm)))
        return 0

    @mn.hookimpl
    def invalidate_range(self, subscription: Any, mm: mn.MM, start: int, end: int) -> None:
        self.order.append(("invalidate_range", self._cpu(mm)))

    @mn.hookimpl
    def change_pte(self, subscription: Any, mm: mn.MM, address: int, pte: mn.PTE) -> None:
        self.order.append(("change_pte", self._cpu(mm)))

    @mn.hookimpl
    def invalidate_range_end(self, subscription: Any, range: mn.Range) -> None:
        self.order.append(("end", self._cpu(range.mm)))


def test_cow_break_flushes_secondary_tlb_before_mapping_the_new_page(kernel):
    """``wp_page_copy``: ``ptep_clear_flush_notify`` then ``set_pte_at_notify``, closed by only_end."""
    mm = mn.MM(kernel)
    addr = mm.mmap(PAGE)
    shared = mm.fault(addr, write=True)
    child = mm.fork()
    driver = TlbDriver(addr >> mm.page_shift)
    kernel.drivers.add(driver)
    mn.get(driver, mm)
    new = mm.fault(addr, write=True)
    assert new != shared
    assert driver.order == [
        ("start", shared),
        ("invalidate_range", None),  # old entry cleared, new page not mapped yet
        ("change_pte", None),
        ("end", new),  # only_end: no second invalidate_range
    ]
    assert child.page_table.lookup(addr >> mm.page_shift).pfn == shared


def test_end_after_refused_start_switch_names_its_commit_and_release(mm):
    """``mn_hlist_invalidate_range_start`` after c2655835fd8c: end for every end callback on -EAGAIN."""
    from mmu_notifier.kernel import END_AFTER_FAILED_START_COMMIT, END_AFTER_FAILED_START_SINCE

    assert END_AFTER_FAILED_START_COMMIT.startswith("c2655835fd8c")
    assert "ensure range_end() is paired with range_start()" in END_AFTER_FAILED_START_COMMIT
    assert END_AFTER_FAILED_START_SINCE == "5.12"
    assert "c2655835fd8c" in (mn.Kernel.__doc__ or "") and "v5.12" in (mn.Kernel.__doc__ or "")


# -- freeing a held lock (lockdep's debug_check_no_locks_freed) ------------------------------


class LockedSub(RecordingSub):
    """A subscription embedding a driver lock, as kernel drivers embed a mutex in their struct."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = mn.sync.Mutex("locked_sub.lock")


def test_freeing_a_subscription_whose_lock_is_held_reports_both_sites(kernel, driver):
    """``debug_check_no_locks_freed``: kfree of memory holding a held lock; nothing is freed."""
    from mmu_notifier import legacy
    from mmu_notifier.errors import LockFreedError

    mm = mn.MM(kernel)
    sub = LockedSub()
    mn.register(sub, mm, driver=driver)
    mn.unregister(sub, mm)
    sub.lock.lock()
    with pytest.raises(LockFreedError) as info:
        legacy.kfree(sub)
    message = str(info.value)
    assert "LockedSub.lock (locked_sub.lock) freed while held by task" in message
    assert message.count("test_core_issue12.py") == 2  # the holder's site and the free site
    assert info.value.lock is sub.lock
    assert not mn.notifier.is_freed(sub)  # nothing changed
    sub.lock.unlock()
    legacy.kfree(sub)
    assert mn.notifier.is_freed(sub)


def test_freeing_a_lock_another_task_holds_or_waits_for_is_found_by_the_explorer():
    from mmu_notifier import legacy
    from mmu_notifier.explore import Kind, Scenario, ScenarioInstance, explore

    def build() -> ScenarioInstance:
        kernel = mn.Kernel(frames=16)
        driver = RecordingDriver()
        kernel.drivers.add(driver)
        mm = mn.MM(kernel)
        sub = LockedSub()
        mn.register(sub, mm, driver=driver)
        mn.unregister(sub, mm)
        run = ScenarioInstance()

        @run.thread("user")
        def user() -> None:
            with sub.lock:
                mn.sync.yield_now()

        @run.thread("freer")
        def freer() -> None:
            legacy.kfree(sub)

        return run

    result = explore(Scenario("free-held-lock", build), "random", budget=200, stop_on_first=False)
    messages = [bug.problem.message for bug in result.bugs if bug.problem.kind is Kind.EXCEPTION]
    assert any("LockFreedError" in m and "held by task user (at" in m for m in messages), messages
