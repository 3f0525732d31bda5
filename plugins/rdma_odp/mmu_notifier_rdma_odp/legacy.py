"""The 5.3 scheme: one ``ib_ucontext_per_mm`` per (verbs context, mm), on the context's ``per_mm_list``.

Before patch 06 the per_mm belonged to a ucontext:

* ``get_per_mm``: under ``ctx->per_mm_list_lock`` search the list for the
  umem's mm; if absent ``alloc_per_mm`` (``active = true``, the creator's
  tgid, ``mmu_notifier_register`` **while holding the list lock**, so the lock
  order is per_mm_list_lock -> mmap lock for write), add it; then
  ``odp_mrs_count++``;
* implicit children borrow ``root->per_mm`` and bump ``odp_mrs_count`` (no
  lookup, no registration: this is why 5.3 is immune to bug H-3);
* the release of a umem is two write sections: remove it from the tree
  (``remove_umem_from_per_mm``), then ``put_per_mm``: decrement under the
  list lock, unlink from the list at zero, clear ``active`` under
  ``umem_rwsem`` for write, WARN if the tree is not empty,
  ``mmu_notifier_unregister_no_release``, ``put_pid``, and free after a grace
  period (``mmu_notifier_call_srcu``).

The callbacks are 5.4's with ``active`` as the liveness test. The core's
``users`` stays 1 from the registration on: the count is ``odp_mrs_count``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from mmu_notifier import InvalidArgumentError, register
from mmu_notifier.kmem import kfree
from mmu_notifier.legacy import call_srcu, unregister_no_release
from mmu_notifier_rdma_odp.umem_odp import IbUcontextPerMm, IbUmemOdp, Owner, Pid

if TYPE_CHECKING:
    from mmu_notifier_rdma_odp.device import IbUcontext


class LegacyPerMm(IbUcontextPerMm):
    """``struct ib_ucontext_per_mm`` of 5.3: bound to one ucontext, with ``active`` and ``odp_mrs_count``."""

    def __init__(self, owner: Owner, tgid: Pid, context: IbUcontext) -> None:
        super().__init__(owner, tgid)
        self.context = context
        #: cleared under umem_rwsem for write by the last put_per_mm; the callbacks test it
        self.active = True
        #: umems (explicit, implicit parents and children) using this per_mm
        self.odp_mrs_count = 0

    def live(self) -> bool:
        """The callbacks' liveness test of 5.3: ``per_mm->active``."""
        return self.active


class LegacyScheme:
    """How 5.3's umems find and drop their per_mm."""

    #: the members of ``ib_umem_notifiers`` this build fills
    ops: ClassVar[frozenset[str]] = frozenset({"release", "invalidate_range_start", "invalidate_range_end"})
    version: ClassVar[str] = "5.3"

    def __init__(self, owner: Owner) -> None:
        self.owner = owner

    def init_umem(self, umem: IbUmemOdp, context: Any, parent: IbUmemOdp | None) -> None:
        """``ib_umem_odp_get`` / ``_alloc_implicit`` / ``_alloc_child`` of 5.3: find or make the per_mm, insert."""
        if parent is not None:
            per_mm = parent.per_mm
            assert isinstance(per_mm, LegacyPerMm)
            with per_mm.context.per_mm_list_lock:
                per_mm.odp_mrs_count += 1
        else:
            per_mm = self.get_per_mm(umem, context)
        umem.per_mm = per_mm
        if not umem.is_implicit_odp:
            per_mm.umem_rwsem.down_write()
            per_mm.umem_tree.insert(umem)
            per_mm.umem_rwsem.up_write()

    def get_per_mm(self, umem: IbUmemOdp, ctx: IbUcontext) -> LegacyPerMm:
        """``get_per_mm``: the ucontext's per_mm for the umem's mm, registered on first use."""
        if ctx is None:
            raise InvalidArgumentError(f"{umem!r} has no ucontext: the 5.3 scheme keys the per_mm by ucontext")
        mm = umem.owning_mm
        with ctx.per_mm_list_lock:
            for per_mm in ctx.per_mm_list:
                if per_mm.mm is mm:
                    break
            else:
                per_mm = self.alloc_per_mm(ctx, umem)
            per_mm.odp_mrs_count += 1
        found: LegacyPerMm = per_mm
        return found

    def alloc_per_mm(self, ctx: IbUcontext, umem: IbUmemOdp) -> LegacyPerMm:
        """``alloc_per_mm``: a fresh per_mm registered on the mm; the caller holds ``per_mm_list_lock``."""
        mm = umem.owning_mm
        pid = self.owner.current_pid(mm)
        if pid is None:
            pid = Pid(None, "kworker")
        else:
            pid.refs += 1
        per_mm = LegacyPerMm(self.owner, pid, ctx)
        try:
            register(per_mm, mm, driver=self.owner)
        except BaseException:
            pid.put_pid()
            kfree(per_mm)
            raise
        self.owner.stats["per_mm_alloc"] += 1
        ctx.per_mm_list.append(per_mm)
        return per_mm

    def release_umem(self, umem: IbUmemOdp) -> None:
        """``remove_umem_from_per_mm`` then ``put_per_mm``."""
        per_mm = umem.per_mm
        assert isinstance(per_mm, LegacyPerMm)
        if not umem.is_implicit_odp:
            per_mm.umem_rwsem.down_write()
            per_mm.umem_tree.remove(umem)
            umem.notifier_completion.complete_all()
            per_mm.umem_rwsem.up_write()
        self.put_per_mm(per_mm)

    def put_per_mm(self, per_mm: LegacyPerMm) -> None:
        """``put_per_mm``: the last umem deactivates, unregisters without release and frees after a grace period."""
        ctx = per_mm.context
        with ctx.per_mm_list_lock:
            per_mm.odp_mrs_count -= 1
            need_free = per_mm.odp_mrs_count == 0
            if need_free:
                ctx.per_mm_list.remove(per_mm)
        if not need_free:
            return
        per_mm.umem_rwsem.down_write()
        per_mm.active = False
        per_mm.umem_rwsem.up_write()
        mm = per_mm.mm
        assert mm is not None
        if len(per_mm.umem_tree):
            mm.kernel.warn(f"put_per_mm of mm {mm.id}: {len(per_mm.umem_tree)} umem(s) left in the tree")
        unregister_no_release(per_mm, mm)
        per_mm.tgid.put_pid()
        owner = self.owner

        def free_per_mm() -> None:
            owner.stats["per_mm_free"] += 1
            kfree(per_mm)

        call_srcu(mm.kernel, free_per_mm)


__all__ = ["LegacyPerMm", "LegacyScheme"]
