"""The address space: VMAs, page table, events, refcounts (section 1 of the core issue)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmu_notifier as mn
from mmu_notifier import Event, Prot

PAGE = 4096


def _events(driver):
    return [(entry[2], entry[3], entry[4]) for entry in driver.calls("start")]


def test_mmap_picks_page_aligned_addresses_that_do_not_overlap(mm):
    first = mm.mmap(3 * PAGE)
    second = mm.mmap(PAGE + 1)
    assert first % PAGE == 0 and second % PAGE == 0
    assert second >= first + 3 * PAGE
    assert mm.find_vma(second).end == second + 2 * PAGE  # length rounded up to pages


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda mm: mm.mmap(0), mn.InvalidArgumentError),
        (lambda mm: mm.mmap(PAGE, addr=123), mn.InvalidArgumentError),
        (lambda mm: mm.munmap(1, PAGE), mn.InvalidArgumentError),
        (lambda mm: mm.mprotect(0x10000, PAGE, Prot.READ), mn.NoMemoryError),
        (lambda mm: mm.madvise_dontneed(0x10000, PAGE), mn.NoMemoryError),
        (lambda mm: mm.mremap(0x10000, PAGE, 2 * PAGE), mn.BadAddressError),
        (lambda mm: mm.fault(0x10000), mn.BadAddressError),
    ],
    ids=["zero-length", "unaligned-mmap", "unaligned-munmap", "mprotect-hole", "madvise-hole", "mremap-hole",
         "fault-unmapped"],
)
def test_bad_arguments_raise_and_change_nothing(mm, call, error):
    addr = mm.mmap(PAGE)
    mm.fault(addr, write=True)
    before = (list(map(repr, mm.vmas)), dict(mm.page_table.entries))
    with pytest.raises(error):
        call(mm)
    assert (list(map(repr, mm.vmas)), dict(mm.page_table.entries)) == before


def test_fixed_mmap_over_existing_mapping_is_refused(mm):
    addr = mm.mmap(2 * PAGE)
    with pytest.raises(mn.InvalidArgumentError, match="overlaps"):
        mm.mmap(PAGE, addr=addr + PAGE)
    assert len(mm.vmas) == 1


def test_fault_populates_page_table_with_flags(mm):
    addr = mm.mmap(PAGE)
    pfn = mm.fault(addr, write=True)
    pte = mm.page_table.lookup(addr >> mm.page_shift)
    assert pte.pfn == pfn and pte.writable and pte.young and pte.dirty
    assert mm.fault(addr) == pfn


def test_write_fault_on_read_only_mapping_is_refused(mm):
    addr = mm.mmap(PAGE, prot=Prot.READ)
    mm.fault(addr)
    with pytest.raises(mn.BadAddressError, match="write fault"):
        mm.fault(addr, write=True)


def test_unmapped_frames_are_reused(mm):
    addr = mm.mmap(PAGE)
    pfn = mm.fault(addr, write=True)
    mm.munmap(addr, PAGE)
    other = mm.mmap(PAGE)
    assert mm.fault(other, write=True) == pfn


def test_munmap_sends_unmap_and_frees_frames_after_end(kernel, driver, mm):
    seen = []

    class Watch(type(driver)):
        @mn.hookimpl
        def invalidate_range_end(self, subscription, range):
            seen.append(kernel.memory.in_use())

    watch = Watch()
    kernel.drivers.add(watch, name="watch")
    mn.get(watch, mm)
    addr = mm.mmap(2 * PAGE)
    mm.fault(addr, write=True)
    mm.munmap(addr, 2 * PAGE)
    assert [event for event, _, _ in _events(watch)] == [Event.UNMAP]
    assert seen == [1]  # the frame is still allocated when end runs
    assert kernel.memory.in_use() == 0


def test_munmap_of_a_hole_is_fine_and_silent(driver, mm):
    mn.get(driver, mm)
    mm.munmap(0x10000, PAGE)
    assert driver.calls("start") == []


@pytest.mark.parametrize(
    ("operation", "event"),
    [
        (lambda mm, a: mm.munmap(a, PAGE), Event.UNMAP),
        (lambda mm, a: mm.mremap(a, 2 * PAGE, PAGE), Event.UNMAP),
        (lambda mm, a: mm.mprotect(a, 2 * PAGE, Prot.READ), Event.PROTECTION_VMA),
        (lambda mm, a: mm.madvise_dontneed(a, PAGE), Event.CLEAR),
        (lambda mm, a: mm.reclaim(a), Event.CLEAR),
        (lambda mm, a: mm.migrate(a), Event.CLEAR),
        (lambda mm, a: mm.fork(), Event.PROTECTION_PAGE),
        (lambda mm, a: mm.clear_soft_dirty(), Event.SOFT_DIRTY),
    ],
    ids=["munmap", "mremap-shrink", "mprotect", "madvise", "reclaim", "migrate", "fork", "soft-dirty"],
)
def test_each_operation_sends_the_kernels_event(driver, mm, operation, event):
    addr = mm.mmap(2 * PAGE)
    mm.fault(addr, write=True)
    mn.get(driver, mm)
    operation(mm, addr)
    assert [e[0] for e in _events(driver)] == [event]
    assert len(driver.calls("end")) == 1


def test_mremap_move_carries_frames_and_announces_unmap(driver, mm):
    addr = mm.mmap(PAGE)
    blocker = mm.mmap(PAGE)
    assert blocker == addr + PAGE
    pfn = mm.fault(addr, write=True)
    mn.get(driver, mm)
    new = mm.mremap(addr, PAGE, 2 * PAGE)
    assert new != addr
    assert mm.page_table.lookup(new >> mm.page_shift).pfn == pfn
    assert mm.page_table.lookup(addr >> mm.page_shift) is None
    assert _events(driver)[0] == (Event.UNMAP, addr, addr + PAGE)


def test_mremap_grows_in_place_when_room(mm):
    addr = mm.mmap(PAGE)
    assert mm.mremap(addr, PAGE, 3 * PAGE) == addr
    assert mm.find_vma(addr).end == addr + 3 * PAGE
    with pytest.raises(mn.NoMemoryError):
        blocker = mm.mmap(PAGE, addr=addr + 3 * PAGE)
        mm.mremap(addr, 3 * PAGE, 5 * PAGE, may_move=False)
    assert blocker


def test_mprotect_revokes_write_and_splits_vmas(mm):
    addr = mm.mmap(3 * PAGE)
    for page in range(3):
        mm.fault(addr + page * PAGE, write=True)
    mm.mprotect(addr + PAGE, PAGE, Prot.READ)
    assert len(mm.vmas) == 3
    assert not mm.page_table.lookup((addr + PAGE) >> mm.page_shift).writable
    assert mm.page_table.lookup(addr >> mm.page_shift).writable


def test_fork_write_protects_parent_and_cow_copies_with_change_pte(kernel, driver, mm):
    addr = mm.mmap(PAGE)
    shared_pfn = mm.fault(addr, write=True)
    child = mm.fork()
    assert child.page_table.lookup(addr >> mm.page_shift).pfn == shared_pfn
    assert not mm.page_table.lookup(addr >> mm.page_shift).writable
    mn.get(driver, mm)
    new_pfn = mm.fault(addr, write=True)
    assert new_pfn != shared_pfn
    assert kernel.memory.content[new_pfn] == kernel.memory.content[shared_pfn]
    change = driver.calls("change_pte")[0]
    # wp_page_copy: ptep_clear_flush_notify cleared the old entry (and flushed the secondary TLB)
    # before set_pte_at_notify, so change_pte sees no CPU entry and the new frame (issue 12)
    assert change[3] == new_pfn and change[4] is None
    assert _events(driver) == [(Event.CLEAR, addr, addr + PAGE)]
    # the child is the only mapper now: its write reuses the frame in place
    assert child.fault(addr, write=True) == shared_pfn


def test_ksm_merge_calls_change_pte_before_the_cpu_entry_changes(kernel, driver, mm):
    other = mn.MM(kernel)
    addr = mm.mmap(PAGE)
    other_addr = other.mmap(PAGE)
    old = mm.fault(addr, write=True)
    stable = other.fault(other_addr, write=True)
    mn.get(driver, mm)
    assert mm.ksm_merge(addr, other, other_addr) == stable
    change = driver.calls("change_pte")[0]
    assert change[3] == stable and change[4].pfn == old
    assert mm.page_table.lookup(addr >> mm.page_shift).pfn == stable
    assert kernel.memory.refcount[stable] == 2
    assert mm.fault(addr, write=True) != stable  # breaking the merge copies


def test_reclaim_then_fault_brings_back_the_contents_in_a_new_frame(kernel, mm):
    addr = mm.mmap(PAGE)
    pfn = mm.fault(addr, write=True)
    content = kernel.memory.content[pfn]
    assert mm.reclaim(addr) is True
    assert mm.page_table.lookup(addr >> mm.page_shift) is None
    assert mm.reclaim(addr) is False
    assert kernel.memory.content[mm.fault(addr)] == content


def test_migrate_moves_to_a_new_frame(kernel, mm):
    addr = mm.mmap(PAGE)
    pfn = mm.fault(addr, write=True)
    kernel.memory.alloc()  # keep the old frame from being handed straight back
    new = mm.migrate(addr)
    assert new != pfn and mm.page_table.lookup(addr >> mm.page_shift).pfn == new


def test_soft_dirty_cleared_then_set_by_write(mm):
    addr = mm.mmap(PAGE)
    mm.fault(addr, write=True)
    mm.clear_soft_dirty()
    pte = mm.page_table.lookup(addr >> mm.page_shift)
    assert not pte.soft_dirty and not pte.writable
    mm.fault(addr, write=True)
    assert pte.soft_dirty and pte.writable


def test_exit_releases_then_unmaps_everything(kernel, driver, mm):
    addr = mm.mmap(2 * PAGE)
    mm.fault(addr, write=True)
    sub = mn.get(driver, mm)
    mm.exit()
    assert [entry[0] for entry in driver.log[-1:]] == ["release"]
    assert len(mm.page_table) == 0 and mm.vmas == [] and kernel.memory.in_use() == 0
    with pytest.raises(mn.MisuseError, match="exited"):
        mm.mmap(PAGE)
    mn.put(sub)
    mn.synchronize(kernel)


def test_mm_refcounts_follow_the_kernel(mm):
    assert (mm.mm_users.value, mm.mm_count.value) == (1, 1)
    assert mm.mmget_not_zero()
    mm.mmgrab()
    mm.mmput()
    mm.exit()
    assert mm.mm_users.value == 0 and not mm.freed
    assert not mm.mmget_not_zero()
    with pytest.raises(mn.MisuseError):
        mm.mmget()
    mm.mmdrop()
    assert mm.freed
    with pytest.raises(mn.MisuseError):
        mm.mmdrop()


def test_vma_operations_hold_mmap_lock_for_write(kernel, mm):
    held = []

    class Probe(mn.Driver):
        name = "probe"

        @mn.hookimpl
        def alloc_notifier(self, mm):
            return mn.MMUNotifier()

        @mn.hookimpl
        def free_notifier(self, subscription):
            pass

        @mn.hookimpl
        def invalidate_range_start(self, subscription, range):
            held.append((range.event, range.mm.mmap_lock.is_write_locked_by_current()))
            return 0

    probe = Probe()
    kernel.drivers.add(probe)
    mn.get(probe, mm)
    addr = mm.mmap(PAGE)
    mm.fault(addr, write=True)
    mm.mprotect(addr, PAGE, Prot.READ)
    mm.madvise_dontneed(addr, PAGE)
    mm.munmap(addr, PAGE)
    assert held == [(Event.PROTECTION_VMA, True), (Event.CLEAR, False), (Event.UNMAP, True)]


OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["mmap", "munmap", "fault", "mprotect", "madvise", "reclaim", "migrate", "fork"]),
              st.integers(0, 7), st.integers(1, 3), st.booleans()),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(OPERATIONS)
def test_frames_are_always_accounted_and_vmas_never_overlap(operations):
    kernel = mn.Kernel(frames=512)
    mms = [mn.MM(kernel)]
    base = 1 << 32
    for name, page, pages, write in operations:
        mm = mms[page % len(mms)]
        addr = base + page * PAGE
        try:
            if name == "mmap":
                mm.mmap(pages * PAGE, addr=addr)
            elif name == "munmap":
                mm.munmap(addr, pages * PAGE)
            elif name == "fault":
                mm.fault(addr, write=write)
            elif name == "mprotect":
                mm.mprotect(addr, pages * PAGE, Prot.READ if write else mn.RW)
            elif name == "madvise":
                mm.madvise_dontneed(addr, pages * PAGE)
            elif name == "reclaim":
                mm.reclaim(addr)
            elif name == "migrate":
                mm.migrate(addr)
            elif name == "fork" and len(mms) < 4:
                mms.append(mm.fork())
        except mn.KernelError:
            pass
        for each in mms:
            spans = sorted((v.start, v.end) for v in each.vmas)
            assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
            assert all(each.find_vma(vpn << each.page_shift) for vpn in each.page_table.entries)
    mapped: dict[int, int] = {}
    for each in mms:
        for pte in each.page_table.entries.values():
            mapped[pte.pfn] = mapped.get(pte.pfn, 0) + 1
    assert mapped == kernel.memory.refcount
    for each in mms:
        each.exit()
    assert kernel.memory.in_use() == 0


def test_munmap_of_a_mappings_tail_clears_its_pages(kernel, driver, mm):
    addr = mm.mmap(2 * PAGE)
    mm.fault(addr, write=True)
    mm.fault(addr + PAGE, write=True)
    mn.get(driver, mm)
    mm.munmap(addr + PAGE, PAGE)
    assert mm.page_table.lookup((addr + PAGE) >> mm.page_shift) is None
    assert mm.page_table.lookup(addr >> mm.page_shift) is not None
    assert _events(driver) == [(Event.UNMAP, addr + PAGE, addr + 2 * PAGE)]
    assert kernel.memory.in_use() == 1
