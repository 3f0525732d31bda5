"""ODP on interval notifiers (``scheme = "5.5"``, "RDMA/odp: Use mmu_interval_notifier_insert()", f25a546e6529).

5.5 deleted ``ib_ucontext_per_mm``, its ``umem_rwsem``, the umem's
``notifiers_seq``/``notifiers_count`` and its completion: every umem embeds
its own interval notifier (``umem_odp->notifier``, :class:`UmemNotifier`) over
its range, and the owner's pid moved to the umem (``umem_odp->tgid``).

* :class:`IntervalScheme.init_umem` (``ib_init_umem_odp``):
  ``get_task_pid`` of the caller into ``umem->tgid``, then
  ``mmu_interval_notifier_insert`` over ``[start, end)``;
* :class:`IntervalScheme.release_umem` (the tail of ``ib_umem_odp_release``):
  ``mmu_interval_notifier_remove`` (it waits for an invalidation walking the
  umem: no rwsem, so a nested start cannot deadlock against it: H-1 is gone),
  then ``put_pid``;
* :func:`invalidate` (mlx5's ``mlx5_ib_invalidate_range`` as an interval
  callback): a non-blockable range is refused (``False``); otherwise under
  ``umem_mutex``: ``mmu_interval_set_seq``, then, if any page is mapped, the
  device zaps the MTTs and unmaps the DMA pages of the range;
* the fault path (``pagefault_mr``) samples ``mmu_interval_read_begin``
  before faulting the pages in and stores them (and writes the MTT) under
  ``umem_mutex`` only while ``mmu_interval_read_retry`` is false
  (:func:`mmu_notifier_retry` of :mod:`.umem_odp` dispatches to it); a
  collision is ``EAGAIN`` with no completion to wait on (the next
  ``read_begin`` waits);
* no ``release``: at exit the core sends every umem one blockable
  ``RELEASE`` range, which unmaps it.

Not modelled in 5.5: implicit ODP (5.5 kept the implicit parent outside any
notifier and found its children through a tree the conversion replaced; the
plugin models implicit ODP for 5.3 and 5.4 only): registering an implicit MR
under this scheme is an :class:`~mmu_notifier.errors.InvalidArgumentError`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mmu_notifier import (
    InvalidArgumentError,
    MMUIntervalNotifier,
    Range,
    interval_notifier_insert,
    interval_notifier_remove,
)
from mmu_notifier.kmem import kfree
from mmu_notifier_rdma_odp.umem_odp import IbUmemOdp, Owner, Pid

__all__ = ["IntervalScheme", "UmemNotifier", "invalidate"]


class UmemNotifier(MMUIntervalNotifier):
    """``umem_odp->notifier``: the interval notifier of one umem (``container_of`` is :attr:`umem`)."""

    def __init__(self, umem: IbUmemOdp) -> None:
        super().__init__()
        self.umem = umem


def invalidate(sub: UmemNotifier, range: Range, cur_seq: int) -> bool:
    """The umem's interval callback: the device's ``mlx5_ib_invalidate_range`` (``Mlx5Device.invalidate_interval``)."""
    umem = sub.umem
    device: Any = umem.ibdev
    return bool(device.invalidate_interval(umem, range, cur_seq))


class IntervalScheme:
    """Linux 5.5: one interval notifier per umem; no per-mm object."""

    #: the members of the ops this build fills (an ``mmu_interval_notifier_ops``)
    ops: ClassVar[frozenset[str]] = frozenset({"invalidate"})
    version: ClassVar[str] = "5.5"

    def __init__(self, owner: Owner) -> None:
        self.owner = owner

    def init_umem(self, umem: IbUmemOdp, context: Any, parent: IbUmemOdp | None) -> None:
        """``get_task_pid(current->group_leader)`` into the umem, then the interval insert over it."""
        if umem.is_implicit_odp or parent is not None:
            raise InvalidArgumentError(f"{umem!r}: implicit ODP is not modelled in the 5.5 scheme")
        mm = umem.owning_mm
        pid = self.owner.current_pid(mm)
        if pid is None:
            raise InvalidArgumentError(f"{umem!r}: ib_umem_odp_get outside the process owning mm {mm.id}")
        pid.refs += 1
        umem.tgid = pid
        umem.notifier = UmemNotifier(umem)
        interval_notifier_insert(umem.notifier, mm, umem.start, umem.end - umem.start, self.owner)

    def release_umem(self, umem: IbUmemOdp) -> None:
        """``mmu_interval_notifier_remove`` (waits for an invalidation walking the umem), ``put_pid``, free."""
        notifier = umem.notifier
        assert notifier is not None and isinstance(umem.tgid, Pid)
        interval_notifier_remove(notifier)
        umem.tgid.put_pid()
        umem.notifier = None
        kfree(notifier)
