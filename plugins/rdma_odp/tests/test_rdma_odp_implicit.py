"""Implicit ODP: children created by faults under the parent's mutex, freed after an emptying invalidation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import mmu_notifier as mn

from .conftest import PAGE, World

CHUNK = 1 << 20


def test_children_appear_per_chunk_and_go(make: Callable[..., World]) -> None:
    w = make(implicit_chunk_size=CHUNK)
    data = w.mm.mmap(2 * CHUNK)
    ctx = w.open()
    imr = ctx.reg_implicit_mr()
    per_mm = imr.umem.per_mm
    assert per_mm is not None and per_mm.users == 1 and len(per_mm.umem_tree) == 0
    device = w.devices[0]
    device.page_fault(imr, data, True)
    device.page_fault(imr, data + PAGE, True)
    assert per_mm.users == 2 and len(per_mm.umem_tree) == 1, "one child for the chunk"
    device.page_fault(imr, data + CHUNK, True)
    assert per_mm.users == 3 and len(imr.ksm) == 2
    children = list(per_mm.umem_tree)
    assert [c.start for c in children] == [data - data % CHUNK, data - data % CHUNK + CHUNK]
    assert all(c.private.parent is imr for c in children)
    assert len(w.translations()) == 3
    w.coherent()
    # emptying the first child marks it dying and queues its free
    w.mm.madvise_dontneed(data, 2 * PAGE)
    first = children[0]
    w.kernel.system_wq.flush()
    assert w.driver.stats["child_free"] == 1 and per_mm.users == 2 and len(imr.ksm) == 1
    with pytest.raises(mn.UseAfterFreeError):
        _ = first.npages
    # a new fault there creates a new child
    device.page_fault(imr, data, True)
    assert per_mm.users == 3 and w.driver.stats["child_alloc"] == 3
    # parent teardown marks every child dying and waits for every free
    reader = w.kernel.srcu.read_lock()  # keep the per_mm's free pending while looking at it
    ctx.dereg_mr(imr)
    assert imr.num_leaf_free == 0 and w.driver.stats["child_free"] == 3
    assert not per_mm.linked
    w.kernel.srcu.read_unlock(reader)
    mn.synchronize(w.kernel)
    assert w.driver.stats["umem_alloc"] == w.driver.stats["umem_free"] == 4
    assert w.kernel.warnings == [] and w.kernel.bugs == []


def test_implicit_child_after_exit_fails_with_efault(make: Callable[..., World]) -> None:
    w = make(implicit_chunk_size=CHUNK)
    data = w.mm.mmap(PAGE)
    ctx = w.open()
    imr = ctx.reg_implicit_mr()
    w.mm.mmget()  # someone else keeps the mm_struct's users until the exit below
    w.driver.process_exit(w.mm)
    w.mm.mmput()
    with pytest.raises(mn.BadAddressError, match="gone"):
        w.devices[0].page_fault(imr, data, True)
    ctx.close()
    mn.synchronize(w.kernel)
    assert w.kernel.warnings == []


def test_implicit_child_after_exit_with_the_bug_registers_on_a_dead_mm(make: Callable[..., World]) -> None:
    w = make(implicit_chunk_size=CHUNK, bug_child_without_mmget=True)
    data = w.mm.mmap(PAGE)
    imr = w.open().reg_implicit_mr()
    w.driver.process_exit(w.mm)
    with pytest.raises(mn.MisuseError, match="mm_users == 0"):
        w.devices[0].page_fault(imr, data, True)


def test_fault_after_owner_exit_with_mm_alive_is_einval(make: Callable[..., World]) -> None:
    """get_pid_task fails once the owner exited, though another user keeps the mm alive."""
    w = make()
    data = w.mm.mmap(PAGE)
    mr = w.open().reg_mr(data, PAGE)
    w.mm.mmget()
    w.driver.process_exit(w.mm)
    assert w.mm.alive
    with pytest.raises(mn.InvalidArgumentError, match="exited"):
        w.devices[0].page_fault(mr, data, True)
    w.mm.mmput()
