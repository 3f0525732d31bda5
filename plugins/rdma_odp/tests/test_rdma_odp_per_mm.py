"""The 5.4 per-mm object: one ib_ucontext_per_mm per mm, shared by ucontexts and devices; its life cycle."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import mmu_notifier as mn
from mmu_notifier_rdma_odp import IbUcontextPerMm

from .conftest import PAGE, World


def test_two_ucontexts_on_two_devices_share_one_per_mm(make: Callable[..., World]) -> None:
    w = make()
    data = w.mm.mmap(4 * PAGE)
    first, second = w.open(0), w.open(1)
    mr1 = first.reg_mr(data, 2 * PAGE)
    mr2 = second.reg_mr(data + 2 * PAGE, 2 * PAGE)
    per_mm = mr1.umem.per_mm
    assert isinstance(per_mm, IbUcontextPerMm)
    assert mr2.umem.per_mm is per_mm
    assert per_mm.users == 2
    assert list(per_mm.umem_tree) == [mr1.umem, mr2.umem]
    assert w.driver.stats["per_mm_alloc"] == 1
    assert mr1.umem.ibdev is w.devices[0] and mr2.umem.ibdev is w.devices[1]
    assert per_mm.tgid is w.driver.process(w.mm)
    # one invalidation over both MRs reaches each MR's own device
    assert w.devices[0].page_fault(mr1, data, True) == w.mm.page_table.lookup(data // PAGE).pfn
    w.devices[1].page_fault(mr2, data + 2 * PAGE, True)
    assert len(w.translations()) == 2
    w.mm.madvise_dontneed(data, 4 * PAGE)
    assert w.translations() == {}
    assert mr1.umem.notifiers_seq == 1 and mr2.umem.notifiers_seq == 1
    first.close()
    assert per_mm.users == 1 and per_mm.linked
    reader = w.kernel.srcu.read_lock()  # keep the free pending while looking at it
    second.close()
    assert not per_mm.linked
    w.kernel.srcu.read_unlock(reader)
    mn.synchronize(w.kernel)
    assert mn.kmem.is_freed(per_mm)
    assert w.driver.stats["per_mm_free"] == 1
    assert w.kernel.warnings == []


def test_users_counts_umems_and_each_umem_pins_the_mm(make: Callable[..., World]) -> None:
    w = make()
    data = w.mm.mmap(PAGE)
    count = w.mm.mm_count.value
    ctx = w.open()
    mr = ctx.reg_mr(data, PAGE)
    implicit = ctx.reg_implicit_mr()
    per_mm = mr.umem.per_mm
    assert per_mm is not None and per_mm.users == 2
    assert implicit.umem not in per_mm.umem_tree, "implicit parents are never in the tree"
    # registration pins mm_count once, and each umem mmgrabs it once more
    assert w.mm.mm_count.value == count + 1 + 2
    ctx.dereg_mr(mr)
    assert per_mm.users == 1 and w.mm.mm_count.value == count + 1 + 1
    ctx.dereg_mr(implicit)
    mn.synchronize(w.kernel)
    assert w.mm.mm_count.value == count


def test_a_fresh_per_mm_after_the_last_put(make: Callable[..., World]) -> None:
    w = make()
    data = w.mm.mmap(PAGE)
    ctx = w.open()
    old = ctx.reg_mr(data, PAGE).umem.per_mm
    reader = w.kernel.srcu.read_lock()  # keep the old one's free pending
    ctx.close()
    new = w.open(1).reg_mr(data, PAGE).umem.per_mm
    assert new is not old and new is not None and new.linked and old is not None and not old.linked
    w.kernel.srcu.read_unlock(reader)


def test_alloc_outside_the_owner_warns(make: Callable[..., World]) -> None:
    """ib_umem_alloc_notifier WARNs unless mm is current->mm (the fault work queue has none)."""
    w = make()
    per_mm = w.driver.alloc_notifier(w.mm)
    assert any("not current->mm" in warning for warning in w.kernel.warnings)
    assert per_mm.tgid.mm is None


def test_release_order_of_a_umem(make: Callable[..., World]) -> None:
    """Revoke, unmap DMA (pages unpinned, writable ones dirtied), then remove + complete + put, mmdrop, free."""
    w = make()
    data = w.mm.mmap(PAGE)
    ctx = w.open()
    mr = ctx.reg_mr(data, PAGE)
    pfn = w.devices[0].page_fault(mr, data, True)
    assert w.kernel.memory.refcount[pfn] == 2, "the DMA list pins the page"
    umem = mr.umem
    ctx.dereg_mr(mr)
    assert w.kernel.memory.refcount[pfn] == 1
    assert not mr.live and mr.mtt == {}
    with pytest.raises(mn.UseAfterFreeError):
        _ = umem.npages


def test_module_exit_synchronizes(make: Callable[..., World]) -> None:
    w = make()
    data = w.mm.mmap(PAGE)
    ctx = w.open()
    per_mm = ctx.reg_mr(data, PAGE).umem.per_mm
    reader = w.kernel.srcu.read_lock()  # a walker still in its read section
    ctx.close()
    assert per_mm is not None and not mn.kmem.is_freed(per_mm)
    w.kernel.srcu.read_unlock(reader)
    w.driver.ib_uverbs_cleanup(w.kernel)
    assert mn.kmem.is_freed(per_mm)
    assert w.kernel.srcu.pending_callbacks() == 0


def test_bad_mr_is_a_typed_error(make: Callable[..., World]) -> None:
    w = make()
    ctx = w.open()
    with pytest.raises(mn.InvalidArgumentError, match="page-aligned"):
        ctx.reg_mr(123, PAGE)
    other = w.open(1)
    mr = ctx.reg_mr(w.mm.mmap(PAGE), PAGE)
    with pytest.raises(mn.InvalidArgumentError, match="not registered"):
        other.dereg_mr(mr)


def test_page_shift_must_match_the_kernel(make: Callable[..., World]) -> None:
    w = make(page_shift=21)
    with pytest.raises(mn.InvalidArgumentError, match="page_shift 21"):
        w.open().reg_mr(w.mm.mmap(PAGE), PAGE)
    assert w.driver.stats["umem_alloc"] == 0


def test_module_unload_after_cleanup_leaves_nothing_behind(make: Callable[..., World]) -> None:
    """ib_uverbs_cleanup (flush, synchronize), then rmmod: no deferred free left, the mm goes on without us."""
    w = make(implicit_chunk_size=1 << 20)
    data = w.mm.mmap(2 * PAGE)
    ctx = w.open()
    imr = ctx.reg_implicit_mr()
    w.devices[0].page_fault(imr, data, True)
    w.mm.madvise_dontneed(data, PAGE)  # queues the child's leaf free
    ctx.close()
    w.driver.ib_uverbs_cleanup(w.kernel)
    w.kernel.drivers.unload(w.driver)
    assert w.kernel.srcu.pending_callbacks() == 0
    w.mm.madvise_dontneed(data, 2 * PAGE)
    w.mm.exit()
    assert w.mm.freed and w.kernel.bugs == [] and w.kernel.warnings == []
    assert w.driver.stats["umem_alloc"] == w.driver.stats["umem_free"] == 2
