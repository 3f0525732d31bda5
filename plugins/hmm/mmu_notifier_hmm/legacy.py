"""The pre-5.4 ``struct hmm`` (``scheme = "5.3"``): its own kref and the ``mm->hmm`` back pointer.

Models ``mm/hmm.c`` of Linux 5.3, before patch 05 of the get/put series:

* ``hmm_get_or_create`` (mmap lock held for write) looks up the mm's back
  pointer under ``mm->page_table_lock`` and takes a reference unless the
  count already dropped to zero; otherwise it allocates a new object,
  registers it with ``__mmu_notifier_register``, pins the mm and publishes
  the back pointer. The core may not be edited, so the back pointer lives in
  a table of the driver keyed by mm, still guarded by ``page_table_lock``;
* every mirror and every registered range holds a reference;
* every callback takes a temporary reference unless the count is zero, and
  bails out if it is (the object is being freed);
* the last ``hmm_put`` (``hmm_free``) clears the back pointer, unlinks with
  ``mmu_notifier_unregister_no_release`` and frees.

``legacy_srcu_fix`` selects the free. With it (5.3 as released, commit
6d7c3cde93c1 "mm/hmm: fix use after free with struct hmm in the mmu
notifiers"), the free and the ``mmdrop`` wait for a grace period of the
notifier SRCU (``mmu_notifier_call_srcu``). Without it the memory is freed at
once, while an invalidation that loaded the subscription from the list may
still be about to call into it: ``unregister_no_release`` is not a fence.

Fidelity notes: before the fix the callbacks found the object through
``mm->hmm`` rather than ``container_of``, and the hmm's own ``mmgrab`` came
in the same series right after the fix; both variants here use
``container_of`` and the ``mmgrab``, so the switch changes exactly the free.
"""

from __future__ import annotations

from mmu_notifier import MM, MisuseError, Range, kmem, register_locked, sync
from mmu_notifier import legacy as core_legacy
from mmu_notifier_hmm.hmm import Hmm

#: The back pointers ``mm->hmm`` of one kernel, guarded by each mm's ``page_table_lock``.
BackPointers = dict[MM, "LegacyHmm"]


class LegacyHmm(Hmm):
    """``struct hmm`` (5.3): :class:`Hmm` plus a kref and the back pointer it is published under."""

    def __init__(self, back_pointers: BackPointers, srcu_fix: bool) -> None:
        super().__init__()
        self.kref = sync.Atomic("hmm->kref", 1)
        self.back_pointers = back_pointers
        self.srcu_fix = srcu_fix

    def put_mirror(self) -> None:
        """A mirror drops its reference: ``hmm_put``."""
        hmm_put(self)

    def pin_for_range(self) -> None:
        """A registered range holds a reference too (``kref_get``, 5.3)."""
        self.kref.inc()

    def unpin_for_range(self) -> None:
        """``hmm_range_unregister`` drops the range's reference."""
        hmm_put(self)

    def release(self) -> None:
        """``hmm_release`` under a temporary reference; nothing if the object is being freed."""
        if not self.kref.inc_not_zero():
            return
        try:
            super().release()
        finally:
            hmm_put(self)

    def invalidate_range_start(self, nrange: Range) -> int:
        """``hmm_invalidate_range_start`` under a temporary reference; 0 if the object is being freed."""
        if not self.kref.inc_not_zero():
            return 0
        try:
            return super().invalidate_range_start(nrange)
        finally:
            hmm_put(self)

    def invalidate_range_end(self, nrange: Range) -> None:
        """``hmm_invalidate_range_end`` under a temporary reference; nothing if the object is being freed."""
        if not self.kref.inc_not_zero():
            return
        try:
            super().invalidate_range_end(nrange)
        finally:
            hmm_put(self)


def hmm_get_or_create(driver: object, back_pointers: BackPointers, srcu_fix: bool, mm: MM) -> LegacyHmm:
    """``hmm_get_or_create``: the mm's struct hmm with one more reference, created if needed.

    The caller holds the mmap lock for write, so no other creator runs; an
    object whose count already hit zero is being freed and is replaced.
    Registration errors propagate with nothing published.
    """
    if not mm.mmap_lock.is_write_locked_by_current():
        raise MisuseError("hmm_get_or_create needs the mmap lock held for write")
    with mm.page_table_lock:  # the kernel abuses page_table_lock to guard mm->hmm
        hmm = back_pointers.get(mm)
        if hmm is not None and hmm.kref.inc_not_zero():
            return hmm
    hmm = LegacyHmm(back_pointers, srcu_fix)
    register_locked(hmm, mm, driver=driver)
    mm.mmgrab()
    with mm.page_table_lock:
        back_pointers[mm] = hmm
    return hmm


def hmm_put(hmm: LegacyHmm) -> None:
    """``hmm_put``: ``kref_put(&hmm->kref, hmm_free)``."""
    if not hmm.kref.dec():
        hmm_free(hmm)


def _unpublish(hmm: LegacyHmm, mm: MM) -> None:
    """Clear ``mm->hmm`` if it still points to ``hmm`` (a successor may already be published)."""
    with mm.page_table_lock:
        if hmm.back_pointers.get(mm) is hmm:
            del hmm.back_pointers[mm]


def hmm_free(hmm: LegacyHmm) -> None:
    """``hmm_free``: the last reference went. Never sleeps (it runs inside callbacks too)."""
    mm = hmm.address_space
    kernel = mm.kernel
    if hmm.srcu_fix:
        _unpublish(hmm, mm)
        core_legacy.unregister_no_release(hmm, mm)

        def free_rcu() -> None:
            """``hmm_free_rcu``: after the grace period no walker can still hold the subscription."""
            mm.mmdrop()
            kmem.kfree(hmm)

        core_legacy.call_srcu(kernel, free_rcu)
        return
    core_legacy.unregister_no_release(hmm, mm)
    _unpublish(hmm, mm)
    mm.mmdrop()
    kmem.kfree(hmm)  # the bug: a walker that loaded hmm from the list may still call into it


class HmmScheme53:
    """The 5.3 life cycle (``scheme = "5.3"``): ``hmm_get_or_create`` and the kref; ``mmu_notifier_get`` unused.

    ``back_pointers`` is the driver's table standing in for ``mm->hmm``.
    """

    def __init__(self, back_pointers: BackPointers, srcu_fix: bool) -> None:
        self.back_pointers = back_pointers
        self.srcu_fix = srcu_fix

    def hmm_get_locked(self, driver: object, mm: MM) -> Hmm:
        """``hmm_get_or_create`` (the caller holds the mmap lock for write)."""
        return hmm_get_or_create(driver, self.back_pointers, self.srcu_fix, mm)

    def alloc_notifier(self, mm: MM) -> Hmm:
        """Never called by a correct 5.3 path: the object is made by ``hmm_get_or_create``."""
        raise MisuseError("the 5.3 struct hmm is created by hmm_get_or_create, not by mmu_notifier_get")
