"""The 5.4 radeon_mn: one per mm, node merging, invalidation, non-blockable refusal, release, the guard."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from typing import Any

import pytest

from mmu_notifier import Event, Range, notifier, synchronize
from mmu_notifier.errors import BadAddressError, InvalidArgumentError, KernelError, NoMemoryError
from mmu_notifier.kmem import is_freed
from mmu_notifier_radeon.device import (
    ANONONLY,
    READONLY,
    REGISTER,
    VALIDATE,
    AccessDeniedError,
    Fence,
    KernelOops,
    PermissionDeniedError,
)
from mmu_notifier_radeon.radeon_mn import RadeonMN

Machine = Any  # conftest.Machine
Make = Callable[..., Machine]
USERPTR = ANONONLY | REGISTER
BOUND = USERPTR | VALIDATE


def _spans(rmn: RadeonMN) -> list[tuple[int, int, list[int]]]:
    return [(node.start, node.last, sorted(bo.id for bo in node.bos)) for node in rmn.nodes()]


def test_overlapping_bos_merge_into_one_node_whose_interval_is_the_union(machine: Make) -> None:
    m = machine()
    mm, a = m.process(8)
    file = m.rdev.open(mm)
    p = m.page
    _, first = m.userptr(file, a, 2)
    _, second = m.userptr(file, a + p, 2)
    _, apart = m.userptr(file, a + 5 * p, 1)
    rmn = first.mn
    assert isinstance(rmn, RadeonMN) and second.mn is rmn and apart.mn is rmn
    assert _spans(rmn) == [(a, a + 3 * p - 1, sorted([first.id, second.id])), (a + 5 * p, a + 6 * p - 1, [apart.id])]
    _, bridge = m.userptr(file, a + 2 * p, 4)  # overlaps both nodes: one node over everything
    assert _spans(rmn) == [(a, a + 6 * p - 1, sorted([first.id, second.id, apart.id, bridge.id]))]
    assert rmn.users == 4  # one user per registered BO
    m.rdev.close(file)
    m.finish()


def test_node_never_shrinks_and_goes_with_its_last_bo(machine: Make) -> None:
    m = machine()
    mm, a = m.process(8)
    file = m.rdev.open(mm)
    p = m.page
    h1, first = m.userptr(file, a, 2)
    h2, second = m.userptr(file, a + p, 3)
    rmn = first.mn
    assert rmn is not None
    m.rdev.gem_close(file, h1)
    assert _spans(rmn) == [(a, a + 4 * p - 1, [second.id])], "the union interval stays after its first BO went"
    assert rmn.users == 1 and first.mn is None
    with m.kernel.srcu.read_section():  # a walker that may still see it keeps the free pending
        m.rdev.gem_close(file, h2)
        assert _spans(rmn) == [] and second.mn is None
        assert not rmn.linked and rmn.users == 0  # the last put unlinked it at once
    synchronize(m.kernel)
    assert is_freed(rmn) and not m.radeon.rmns
    m.rdev.close(file)
    m.finish()


def test_one_radeon_mn_per_mm_across_devices(machine: Make) -> None:
    m = machine(devices=2)
    mm, a = m.process(4)
    other, b = m.process(4)
    files = [rdev.open(mm) for rdev in m.radeon.devices]
    bos = [m.userptr(file, a + i * m.page, 1)[1] for i, file in enumerate(files)]
    assert bos[0].mn is bos[1].mn and bos[0].mn is not None and bos[0].mn.users == 2
    container = mm.mmu_notifier_mm
    assert container is not None and len(container.subscriptions) == 1
    other_bo = m.userptr(m.rdev.open(other), b, 1)[1]
    assert other_bo.mn is not bos[0].mn
    readonly = m.userptr(files[0], a + 2 * m.page, 1, READONLY)[1]  # no REGISTER: no reference, no node
    assert readonly.mn is None and bos[0].mn.users == 2
    m.finish()


def test_invalidation_waits_for_every_fence_then_unbinds(machine: Make) -> None:
    m = machine()
    mm, a = m.process(4)
    file = m.rdev.open(mm)
    _, bo = m.userptr(file, a, 2)
    busy = Fence("test")
    m.rdev.bo_reserve(bo)
    bo.resv.add_fence(busy, write=True)
    m.rdev.bo_unreserve(bo)
    worker = threading.Thread(target=lambda: mm.madvise_dontneed(a, m.page))
    worker.start()
    worker.join(0.3)
    assert worker.is_alive() and bo.bound, "the invalidation must wait for the GPU before moving the BO out"
    busy.signal()
    worker.join(10)
    assert not worker.is_alive() and not bo.bound and not m.radeon.translations(mm)
    assert m.radeon.stats["evict"] == 1
    m.finish()


def test_invalidation_evicts_every_bound_bo_of_an_overlapping_node(machine: Make) -> None:
    m = machine()
    mm, a = m.process(8)
    file = m.rdev.open(mm)
    p = m.page
    _, low = m.userptr(file, a, 2)
    _, high = m.userptr(file, a + p, 2)
    _, apart = m.userptr(file, a + 5 * p, 1)
    mm.madvise_dontneed(a + 2 * p, p)  # only `high` overlaps the range; `low` shares its node
    assert not low.bound and not high.bound, "the union node over-invalidates every BO in it"
    assert apart.bound
    assert set(m.radeon.translations(mm)) == {(a + 5 * p) >> mm.page_shift}
    m.finish()


def test_nonblockable_refuses_at_the_first_overlapping_node_even_if_nothing_is_bound(machine: Make) -> None:
    m = machine()
    mm, a = m.process(4)
    file = m.rdev.open(mm)
    _, bo = m.userptr(file, a, 2, USERPTR)  # registered, never validated
    assert not bo.bound
    inside = Range(mm, a, a + m.page, Event.UNMAP)
    assert notifier.invalidate_range_start_nonblock(inside) == -errno.EAGAIN
    outside = Range(mm, a + 2 * m.page, a + 4 * m.page, Event.UNMAP)
    assert notifier.invalidate_range_start_nonblock(outside) == 0
    assert mm.oom_reap() is False  # the reaper skips the VMA radeon refused
    rmn = bo.mn
    assert rmn is not None
    rmn.lock.lock()  # contended: a non-blockable start only trylocks
    try:
        assert notifier.invalidate_range_start_nonblock(outside) == -errno.EAGAIN
    finally:
        rmn.lock.unlock()
    assert not m.kernel.warnings
    m.finish()


def test_release_with_flags_0_refuses_and_leaves_the_bos_bound(machine: Make) -> None:
    m = machine()
    mm, a = m.process(4)
    file = m.rdev.open(mm)
    _, bo = m.userptr(file, a, 2)
    rmn = bo.mn
    assert rmn is not None
    mm.exit()  # exit_mm before exit_files: every BO still registered
    assert m.radeon.stats["release_refused"] == 1
    assert bo.bound and len(m.radeon.translations(mm)) == 2, "5.4's release changes nothing"
    m.rdev.close(file)  # exit_files: the BOs go, each with its put
    assert not m.radeon.translations(mm)
    synchronize(m.kernel)
    assert is_freed(rmn) and mm.freed
    m.finish()


def test_blockable_release_unbinds_every_bo(machine: Make) -> None:
    m = machine(release_blockable=True)
    mm, a = m.process(4)
    file = m.rdev.open(mm)
    _, bo = m.userptr(file, a, 2)
    mm.exit()
    assert not bo.bound and not m.radeon.translations(mm) and m.radeon.stats["release_refused"] == 0
    m.rdev.close(file)
    m.finish()
    assert mm.freed and not m.radeon.rmns


def test_freeing_a_plain_bo_needs_the_guard(machine: Make) -> None:
    guarded = machine()
    mm, _ = guarded.process(1)
    file = guarded.rdev.open(mm)
    guarded.rdev.gem_close(file, guarded.rdev.gem_create(file, guarded.page))
    assert guarded.radeon.stats["bo_free"] == 1
    guarded.finish()
    unguarded = machine(unpaired_unregister_guard=False)
    mm, _ = unguarded.process(1)
    file = unguarded.rdev.open(mm)
    handle = unguarded.rdev.gem_create(file, unguarded.page)
    with pytest.raises(KernelOops, match="NULL pointer dereference"):
        unguarded.rdev.gem_close(file, handle)


def test_userptr_ioctl_flag_rules(machine: Make) -> None:
    m = machine(r600=False)
    mm, a = m.process(4)
    file = m.rdev.open(mm)
    with pytest.raises(AccessDeniedError):
        m.rdev.gem_userptr(file, a, m.page, REGISTER)  # writable without ANONONLY
    with pytest.raises(InvalidArgumentError, match="unknown"):
        m.rdev.gem_userptr(file, a, m.page, 1 << 7)
    with pytest.raises(InvalidArgumentError, match="aligned"):
        m.rdev.gem_userptr(file, a + 1, m.page, BOUND)
    with pytest.raises(InvalidArgumentError, match="R600"):
        m.rdev.gem_userptr(file, a, m.page, READONLY)
    shared = mm.mmap(m.page, shared=True)
    with pytest.raises(PermissionDeniedError):  # ANONONLY: a shared mapping is not private anonymous memory
        m.rdev.gem_userptr(file, shared, m.page, BOUND)
    assert not file.handles and not m.rdev.bos and mm.mmu_notifier_mm is not None
    assert not [s for s in mm.mmu_notifier_mm.subscriptions if s.linked], "the failed BO's put dropped its user"
    m.finish()




def test_command_submission_revalidates_with_the_current_pages(machine: Make) -> None:
    m = machine()
    mm, a = m.process(2)
    file = m.rdev.open(mm)
    handle, bo = m.userptr(file, a, 2)
    mm.madvise_dontneed(a, m.page)
    assert not bo.bound
    m.rdev.cs(file, [(handle, True)])
    pte = mm.page_table.lookup(a >> mm.page_shift)
    assert bo.bound and pte is not None and bo.pages[0] == pte.pfn  # the page faulted in again
    assert bo.resv.excl is not None and bo.resv.excl.signaled
    ro_handle, _ = m.userptr(file, a, 1, READONLY | USERPTR)
    with pytest.raises(BadAddressError):
        m.rdev.cs(file, [(ro_handle, True)])
    m.finish()


def test_close_unbinds_unpins_and_unregisters(machine: Make) -> None:
    m = machine()
    mm, a = m.process(4)
    before = m.kernel.memory.in_use()
    file = m.rdev.open(mm)
    _, bo = m.userptr(file, a, 4)
    rmn = bo.mn
    assert rmn is not None and m.rdev.gtt.entries
    with m.kernel.srcu.read_section():
        m.rdev.close(file)
        assert bo.freed and not bo.bound and not m.rdev.gtt.entries and rmn.users == 0
    assert m.kernel.memory.in_use() == before  # every pin dropped
    m.finish()


def test_submission_from_another_process_is_refused(machine: Make) -> None:
    m = machine()
    mm, a = m.process(2)
    other, _ = m.process(1)
    file = m.rdev.open(mm)
    handle, _ = m.userptr(file, a, 2, USERPTR)
    foreign = m.rdev.open(other)
    foreign.handles[1] = file.handles[handle]  # a BO shared into another process (flink/dma-buf)
    with pytest.raises(KernelError) as raised:
        m.rdev.cs(foreign, [(1, False)])
    assert raised.value.errno == errno.EPERM
    del foreign.handles[1]  # the other process drops its reference; the owner's close frees the BO
    m.finish()


def test_failed_node_allocation_after_the_get_leaks_the_user(machine: Make) -> None:
    """5.4 (a reading of the code): -ENOMEM without the put; the guard makes the BO's unregister a no-op."""
    m = machine()
    mm, a = m.process(2)
    file = m.rdev.open(mm)
    m.kernel.faults.inject("radeon.node_alloc", nth=1)
    with pytest.raises(NoMemoryError):
        m.userptr(file, a, 1)
    assert not file.handles and m.radeon.stats["node_alloc_failed"] == 1
    container = mm.mmu_notifier_mm
    assert container is not None
    (rmn,) = container.subscriptions
    assert rmn.users == 1 and rmn.linked, "nobody will ever put this user"
    mm.exit()
    m.finish()
    assert not is_freed(rmn) and not mm.freed and len(m.radeon.rmns) == 1


def test_failed_node_allocation_with_the_put(machine: Make) -> None:
    m = machine(register_failure_put=True)
    mm, a = m.process(2)
    file = m.rdev.open(mm)
    m.kernel.faults.inject("radeon.node_alloc", nth=1)
    with pytest.raises(NoMemoryError):
        m.userptr(file, a, 1)
    m.finish()
    assert mm.freed and not m.radeon.rmns


def test_a_merge_needs_no_node_allocation(machine: Make) -> None:
    m = machine()
    mm, a = m.process(4)
    file = m.rdev.open(mm)
    m.userptr(file, a, 2)
    m.kernel.faults.inject("radeon.node_alloc", nth=1)
    _, merged = m.userptr(file, a + m.page, 2)  # overlaps: reuses the existing node, no kmalloc
    assert merged.mn is not None and m.kernel.faults.calls("radeon.node_alloc") == 1
    m.finish()


def test_failed_reserve_or_validate_leaves_the_bo_bound(machine: Make) -> None:
    m = machine()
    mm, a = m.process(4)
    file = m.rdev.open(mm)
    _, first = m.userptr(file, a, 1)
    _, second = m.userptr(file, a + 2 * m.page, 1)
    m.kernel.faults.inject("radeon.bo_reserve", nth=1)
    mm.madvise_dontneed(a, m.page)
    assert first.bound and m.radeon.stats["reserve_failed"] == 1, "DRM_ERROR and skip: the BO stays bound"
    m.kernel.faults.inject("radeon.bo_validate", nth=1)
    mm.madvise_dontneed(a + 2 * m.page, m.page)
    assert second.bound and m.radeon.stats["validate_failed"] == 1
    assert not m.kernel.warnings  # the start still returned 0
    m.finish()


def test_translations_keep_the_stale_frame_where_bos_disagree(machine: Make) -> None:
    m = machine()
    mm, a = m.process(2)
    file = m.rdev.open(mm)
    _, old = m.userptr(file, a, 1, READONLY | VALIDATE)  # not registered: nothing evicts it
    mm.madvise_dontneed(a, m.page)
    _, new = m.userptr(file, a, 1)
    pte = mm.page_table.lookup(a >> mm.page_shift)
    assert pte is not None and new.pages[0] == pte.pfn != old.pages[0]
    assert m.radeon.translations(mm) == {a >> mm.page_shift: old.pages[0]}
    m.finish()
