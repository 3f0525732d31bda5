"""The 5.3 scheme: one per_mm per (ucontext, mm), registered under per_mm_list_lock, freed after a grace period."""

from __future__ import annotations

from collections.abc import Callable

import mmu_notifier as mn
from mmu_notifier_rdma_odp import LegacyPerMm

from .conftest import PAGE, World


def test_one_per_mm_per_ucontext(make: Callable[..., World]) -> None:
    w = make(scheme="5.3")
    data = w.mm.mmap(2 * PAGE)
    first, second = w.open(0), w.open(1)
    a = first.reg_mr(data, PAGE)
    b = first.reg_mr(data + PAGE, PAGE)
    c = second.reg_mr(data, PAGE)
    per_mm = a.umem.per_mm
    assert isinstance(per_mm, LegacyPerMm)
    assert b.umem.per_mm is per_mm and c.umem.per_mm is not per_mm
    assert per_mm.odp_mrs_count == 2 and per_mm.users == 1, "the count is odp_mrs_count, not users"
    assert first.per_mm_list == [per_mm]
    assert w.mm.mmu_notifier_mm is not None and len(w.mm.mmu_notifier_mm.subscriptions) == 2
    first.dereg_mr(a)
    assert per_mm.active and per_mm.odp_mrs_count == 1
    reader = w.kernel.srcu.read_lock()  # a walker still inside the notifier SRCU
    first.dereg_mr(b)
    assert not per_mm.active and not per_mm.linked and first.per_mm_list == []
    assert not mn.kmem.is_freed(per_mm), "freed only after a grace period (call_srcu)"
    w.kernel.srcu.read_unlock(reader)
    w.kernel.srcu.barrier()
    assert mn.kmem.is_freed(per_mm)
    second.close()
    w.kernel.srcu.barrier()
    assert w.driver.stats["per_mm_alloc"] == w.driver.stats["per_mm_free"] == 2
    assert w.kernel.warnings == []


def test_children_borrow_the_parent_per_mm(make: Callable[..., World]) -> None:
    w = make(scheme="5.3", implicit_chunk_size=1 << 20)
    data = w.mm.mmap(PAGE)
    ctx = w.open()
    imr = ctx.reg_implicit_mr()
    per_mm = imr.umem.per_mm
    assert isinstance(per_mm, LegacyPerMm)
    w.devices[0].page_fault(imr, data, True)
    (child,) = per_mm.umem_tree
    assert child.per_mm is per_mm and per_mm.odp_mrs_count == 2
    assert w.driver.stats["per_mm_alloc"] == 1
    ctx.close()
    w.kernel.srcu.barrier()
    assert w.driver.stats["per_mm_free"] == 1 and w.kernel.warnings == []


def test_callbacks_test_active_not_users(make: Callable[..., World]) -> None:
    w = make(scheme="5.3")
    data = w.mm.mmap(PAGE)
    mr = w.open().reg_mr(data, PAGE)
    per_mm = mr.umem.per_mm
    assert isinstance(per_mm, LegacyPerMm)
    per_mm.active = False
    w.devices[0].page_fault(mr, data, True)
    w.mm.madvise_dontneed(data, PAGE)
    assert mr.umem.notifiers_count == 0 and mr.umem.notifiers_seq == 0, "an inactive per_mm ignores invalidations"
    per_mm.active = True


def test_context_closed_with_per_mm_left_warns(make: Callable[..., World]) -> None:
    """mlx5's 5.3 dealloc_ucontext WARNs if its per_mm_list is not empty."""
    w = make(scheme="5.3")
    ctx = w.open()
    ctx.reg_mr(w.mm.mmap(PAGE), PAGE)
    ctx.per_mm_list.append(ctx.per_mm_list[0])  # a leaked second entry the close cannot drop
    ctx.close()
    assert any("per_mm object" in warning for warning in w.kernel.warnings)
