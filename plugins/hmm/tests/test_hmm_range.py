"""The range API: registration, validity tracking, waiting, and hmm_range_fault."""

from __future__ import annotations

import pytest

import mmu_notifier as mn
from mmu_notifier.explore import Scenario, ScenarioInstance, explore
from mmu_notifier.notifier import invalidate_range_end, invalidate_range_start
from mmu_notifier_hmm import (
    HmmPfn,
    HmmPfnFlag,
    HmmRange,
    PermissionDeniedError,
    range_fault,
    range_register,
    range_unregister,
    range_valid,
    range_wait_until_valid,
)


@pytest.fixture
def bound(world, recording, register):
    """A world with one recording mirror registered."""
    kernel, _, mm = world
    mirror = recording()
    register(mirror, mm)
    return kernel, mm, mirror


def page_range(mm: mn.MM, base: int, first: int, count: int, flags: HmmPfnFlag = HmmPfnFlag.VALID) -> HmmRange:
    return HmmRange(base + first * mm.page_size, base + (first + count) * mm.page_size, flags)


def announce(mm: mn.MM, start: int, end: int) -> mn.Range:
    """Start a blockable invalidation of ``[start, end)`` and leave it in flight."""
    rng = mn.Range(mm, start, end, mn.Event.CLEAR)
    invalidate_range_start(rng)
    return rng


def faulted(mm: mn.MM, addr: int) -> list[HmmPfn | None]:
    """What the CPU maps at ``addr`` (for comparing with range.pfns)."""
    pte = mm.page_table.lookup(addr >> mm.page_shift)
    return [HmmPfn(pte.pfn, pte.writable) if pte else None]


# -- registration ------------------------------------------------------------------


@pytest.mark.parametrize(("start", "end"), [(1, 4096), (0, 4097), (4096, 4096), (8192, 4096)])
def test_register_checks_alignment_and_order(bound, start, end):
    _, mm, mirror = bound
    users = mm.mm_users.value
    rng = HmmRange(start, end)
    with pytest.raises(mn.InvalidArgumentError):
        range_register(rng, mirror)
    assert rng.hmm is None and not rng.valid and mm.mm_users.value == users


def test_register_pins_mm_users_until_unregister(bound, mapped):
    _, mm, mirror = bound
    base = mapped(mm, 1)
    rng = page_range(mm, base, 0, 1)
    range_register(rng, mirror)
    assert mm.mm_users.value == 2 and rng.valid and rng.hmm is mirror.hmm
    mm.exit()  # the process exits, but the range keeps the address space alive
    assert mm.alive and mirror.released == 0
    range_unregister(rng)  # the last mm_users reference: teardown runs now
    assert not mm.alive and mirror.released == 1
    assert rng.hmm is None and not rng.valid


def test_register_on_a_dying_mm_is_efault(bound):
    _, mm, mirror = bound
    mm.exit()
    rng = HmmRange(0, mm.page_size)
    with pytest.raises(mn.BadAddressError):
        range_register(rng, mirror)
    assert rng.hmm is None and mirror.hmm.ranges == []


def test_unregistered_range_is_poisoned(bound, mapped):
    _, mm, mirror = bound
    rng = page_range(mm, mapped(mm, 1), 0, 1)
    range_register(rng, mirror)
    range_unregister(rng)
    for call in (range_valid, range_unregister, range_fault):
        with pytest.raises(mn.MisuseError, match="not registered"):
            call(rng)


# -- validity ----------------------------------------------------------------------


def test_register_during_an_invalidation_is_invalid_until_it_ends(bound, mapped):
    _, mm, mirror = bound
    base = mapped(mm, 4)
    far = announce(mm, base + 3 * mm.page_size, base + 4 * mm.page_size)  # overlaps nothing registered
    rng = page_range(mm, base, 0, 1)
    range_register(rng, mirror)
    assert not range_valid(rng)  # any invalidation in flight makes a new range invalid
    invalidate_range_end(far)
    assert range_valid(rng)


def test_ranges_revalidate_exactly_when_the_count_returns_to_zero(bound, mapped):
    _, mm, mirror = bound
    base = mapped(mm, 4)
    hit, spared = page_range(mm, base, 0, 2), page_range(mm, base, 3, 1)
    range_register(hit, mirror)
    range_register(spared, mirror)
    hmm = mirror.hmm
    first = announce(mm, base, base + mm.page_size)
    second = announce(mm, base + mm.page_size, base + 2 * mm.page_size)
    assert hmm.notifiers == 2 and not range_valid(hit) and range_valid(spared)
    invalidate_range_end(first)
    assert hmm.notifiers == 1 and not range_valid(hit)
    invalidate_range_end(second)
    assert hmm.notifiers == 0 and range_valid(hit) and range_valid(spared)


def test_an_invalidation_ending_at_the_range_start_hits_it(bound, mapped):
    # The kernel's overlap test is "nrange.end < range.start": touching counts.
    _, mm, mirror = bound
    base = mapped(mm, 2)
    rng = page_range(mm, base, 1, 1)
    range_register(rng, mirror)
    touching = announce(mm, base, base + mm.page_size)
    assert not range_valid(rng)
    invalidate_range_end(touching)
    assert range_valid(rng)


def test_wait_until_valid_returns_at_once_or_times_out(bound, mapped):
    _, mm, mirror = bound
    base = mapped(mm, 1)
    rng = page_range(mm, base, 0, 1)
    range_register(rng, mirror)
    assert range_wait_until_valid(rng, 0)
    pending = announce(mm, base, base + mm.page_size)
    assert not range_wait_until_valid(rng, 5)
    invalidate_range_end(pending)
    assert range_wait_until_valid(rng, 0)


def _waiter_world(results: list[bool]) -> ScenarioInstance:
    from mmu_notifier_hmm import HmmDriver, HmmMirror, mirror_register

    class Quiet(HmmMirror):
        def sync_cpu_device_pagetables(self, range: mn.Range) -> int:
            return 0

    kernel = mn.Kernel(frames=16)
    kernel.drivers.add(HmmDriver())
    mm = mn.MM(kernel)
    base = mm.mmap(mm.page_size)
    mirror = Quiet()
    mm.mmap_lock.down_write()
    mirror_register(mirror, mm)
    mm.mmap_lock.up_write()
    rng = HmmRange(base, base + mm.page_size)
    range_register(rng, mirror)
    pending = announce(mm, base, base + mm.page_size)
    run = ScenarioInstance()
    run.thread("waiter")(lambda: results.append(range_wait_until_valid(rng, 10_000)))
    run.thread("ender")(lambda: invalidate_range_end(pending))
    return run


def test_wait_until_valid_wakes_when_the_last_invalidation_ends():
    results: list[bool] = []
    scenario = Scenario("hmm-test-waiter", lambda: _waiter_world(results))
    result = explore(scenario, "dfs", budget=1000, preemptions=3, minimise_budget=0, reproduce=0)
    assert result.complete and not result.findings  # no lost wake-up, no deadlock
    assert results and all(results) and len(results) == result.stats.schedules


# -- hmm_range_fault -----------------------------------------------------------------


def test_fault_fills_pfns_from_the_cpu_page_table(bound, mapped):
    _, mm, mirror = bound
    base = mapped(mm, 3, fault=False)
    mm.fault(base, write=True)
    rng = page_range(mm, base, 0, 3)
    range_register(rng, mirror)
    mm.mmap_lock.down_read()
    try:
        assert range_fault(rng) == 3
    finally:
        mm.mmap_lock.up_read()
    assert rng.pfns == faulted(mm, base) + faulted(mm, base + mm.page_size) + faulted(mm, base + 2 * mm.page_size)
    assert all(rng.pfns) and rng.pfns[0].write  # pages 1 and 2 were faulted in by the walk


def test_snapshot_faults_nothing_and_skips_holes(bound, mapped):
    _, mm, mirror = bound
    base = mapped(mm, 2, fault=False)
    mm.fault(base)
    rng = HmmRange(base, base + 3 * mm.page_size, HmmPfnFlag.NONE)  # the last page is a hole
    range_register(rng, mirror)
    mm.mmap_lock.down_read()
    try:
        assert range_fault(rng) == 3
    finally:
        mm.mmap_lock.up_read()
    assert rng.pfns[0] == faulted(mm, base)[0] and rng.pfns[1:] == [None, None]
    assert mm.page_table.lookup((base >> mm.page_shift) + 1) is None


def test_write_fault_breaks_cow(bound, mapped):
    _, mm, mirror = bound
    base = mapped(mm, 1)
    child = mm.fork()
    shared = mm.page_table.lookup(base >> mm.page_shift).pfn
    rng = page_range(mm, base, 0, 1, HmmPfnFlag.VALID | HmmPfnFlag.WRITE)
    range_register(rng, mirror)
    mm.mmap_lock.down_read()
    try:
        range_fault(rng)
    finally:
        mm.mmap_lock.up_read()
    assert rng.pfns[0].write and rng.pfns[0].pfn != shared
    assert child.page_table.lookup(base >> mm.page_shift).pfn == shared


@pytest.mark.parametrize(
    ("prot", "flags", "error"),
    [
        (mn.Prot.READ, HmmPfnFlag.VALID | HmmPfnFlag.WRITE, PermissionDeniedError),
        (mn.Prot.NONE, HmmPfnFlag.VALID, PermissionDeniedError),
    ],
)
def test_fault_permission_errors_are_eperm(bound, prot, flags, error):
    _, mm, mirror = bound
    base = mm.mmap(2 * mm.page_size, prot=prot)
    rng = HmmRange(base, base + 2 * mm.page_size, flags)
    range_register(rng, mirror)
    mm.mmap_lock.down_read()
    try:
        with pytest.raises(error) as caught:
            range_fault(rng)
    finally:
        mm.mmap_lock.up_read()
    assert caught.value.kernel_return == -1 and rng.pfns == [None, None]


def test_fault_in_a_hole_is_efault(bound, mapped):
    _, mm, mirror = bound
    base = mapped(mm, 1)
    rng = HmmRange(base, base + 2 * mm.page_size)
    range_register(rng, mirror)
    mm.mmap_lock.down_read()
    try:
        with pytest.raises(mn.BadAddressError):
            range_fault(rng)
    finally:
        mm.mmap_lock.up_read()
    assert rng.pfns[0] == faulted(mm, base)[0] and rng.pfns[1] is None


def test_fault_needs_the_mmap_lock(bound, mapped):
    _, mm, mirror = bound
    rng = page_range(mm, mapped(mm, 1), 0, 1)
    range_register(rng, mirror)
    with pytest.raises(mn.MisuseError, match="mmap lock"):
        range_fault(rng)


def test_fault_of_an_invalid_range_is_ebusy_at_once(bound, mapped):
    _, mm, mirror = bound
    base = mapped(mm, 1)
    rng = page_range(mm, base, 0, 1)
    range_register(rng, mirror)
    pending = announce(mm, base, base + mm.page_size)
    mm.mmap_lock.down_read()
    try:
        with pytest.raises(mn.BusyError):
            range_fault(rng)
    finally:
        mm.mmap_lock.up_read()
    invalidate_range_end(pending)
    assert rng.pfns == [None]


def test_fault_is_ebusy_when_the_range_turns_invalid_mid_walk(bound, mapped):
    """Page 0 is walked; the write fault of page 1 breaks COW, an invalidation of page 1.

    Another invalidation elsewhere is still in flight, so the COW's end does
    not bring the count to zero and the range stays invalid: EBUSY.
    """
    _, mm, mirror = bound
    base = mapped(mm, 3)
    mm.fork()  # every page is now copy-on-write
    rng = page_range(mm, base, 0, 2, HmmPfnFlag.VALID)
    range_register(rng, mirror)
    mm.fault(base, write=True)  # page 0 is private and writable again
    rng.default_flags = HmmPfnFlag.VALID | HmmPfnFlag.WRITE
    elsewhere = announce(mm, base + 2 * mm.page_size, base + 3 * mm.page_size)
    assert range_valid(rng)
    mm.mmap_lock.down_read()
    try:
        with pytest.raises(mn.BusyError, match="while faulting"):
            range_fault(rng)
    finally:
        mm.mmap_lock.up_read()
    assert rng.pfns[0] == faulted(mm, base)[0] and rng.pfns[1] is None
    assert mirror.hmm.notifiers == 1 and not range_valid(rng)
    invalidate_range_end(elsewhere)
    assert range_valid(rng)


def _mid_walk_world(outcomes: list[tuple[str, list[HmmPfn | None]]]) -> ScenarioInstance:
    """A walk over a present page then an absent one, racing a reclaim of the present one."""
    from mmu_notifier_hmm import HmmDriver, HmmMirror, mirror_register

    class Quiet(HmmMirror):
        def sync_cpu_device_pagetables(self, range: mn.Range) -> int:
            return 0

    kernel = mn.Kernel(frames=16)
    kernel.drivers.add(HmmDriver())
    mm = mn.MM(kernel)
    base = mm.mmap(2 * mm.page_size)
    mm.fault(base)
    mirror = Quiet()
    mm.mmap_lock.down_write()
    mirror_register(mirror, mm)
    mm.mmap_lock.up_write()
    rng = HmmRange(base, base + 2 * mm.page_size)
    range_register(rng, mirror)
    run = ScenarioInstance()

    @run.thread("walk")
    def walk() -> None:
        mm.mmap_lock.down_read()
        try:
            range_fault(rng)
            outcomes.append(("ok", list(rng.pfns)))
        except mn.BusyError:
            outcomes.append(("ebusy", list(rng.pfns)))
        finally:
            mm.mmap_lock.up_read()

    run.thread("reclaim")(lambda: mm.reclaim(base))
    return run


def test_fault_is_ebusy_when_an_invalidation_lands_mid_walk_under_any_schedule():
    outcomes: list[tuple[str, list[HmmPfn | None]]] = []
    scenario = Scenario("hmm-test-mid-walk", lambda: _mid_walk_world(outcomes))
    result = explore(scenario, "dfs", budget=5000, preemptions=2, minimise_budget=0, reproduce=0)
    assert result.complete and not result.findings
    kinds = {(status, pfns[0] is not None) for status, pfns in outcomes}
    # EBUSY after page 0 was filled: the reclaim started between the walk's first page and its fault check
    assert ("ebusy", True) in kinds and ("ok", True) in kinds
    assert all(pfns[1] is None for status, pfns in outcomes if status == "ebusy")
    assert all(all(pfns) for status, pfns in outcomes if status == "ok")
