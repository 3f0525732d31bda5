"""The v5.3 GRU driver (``scheme = "5.3"``): its own GMS lookup, its own refcount, and ``ms_released``.

Before patch 04 the driver managed the per-mm GMS by hand:

* lookup: walk the mm's notifier list under plain RCU (not the notifier
  SRCU) for an entry whose ops is ``gru_mmuops``;
* found: ``atomic_inc(&ms_refcnt)``, with no "unless zero" check;
* not found: allocate, refcount 1, ``__mmu_notifier_register``;
* drop: at refcount 0, ``mmu_notifier_unregister`` unless ``ms_released``
  is set, then ``kfree`` at once;
* ``release``: set ``ms_released = 1``, no lock, no barrier.

Patch 04 names what goes wrong: a register can find (and re-reference) a GMS
whose refcount a concurrent drop already took to zero and is about to free;
and a drop that sees ``ms_released`` frees with no grace period while
notifier walkers (teardown's own unlink, an rmap invalidation) may still hold
the GMS. It also leaks the mm pin of the registration, as the kernel did.
The model marks the unlocked flag with ``yield_now`` so the explorer treats
each access as a racy shared-memory access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from mmu_notifier import MM, MMUNotifier, kmem, register_locked, sync, unregister
from mmu_notifier_gru.gru_mm_struct import GruMMStruct

if TYPE_CHECKING:
    from mmu_notifier_gru.device import GruDriverBase


class LegacyGruMMStruct(GruMMStruct):
    """The v5.3 GMS: the notifier plus ``ms_refcnt`` and ``ms_released``."""

    def __init__(self, chiplets: int) -> None:
        super().__init__(chiplets)
        self.ms_refcnt = sync.Atomic("ms_refcnt", 1)
        #: set by release, read by the last drop; never locked
        self.ms_released = False


class GruScheme53:
    """The v5.3 build: ``gru_mmuops`` is start, end and release; no alloc/free_notifier."""

    version: ClassVar[str] = "5.3"
    #: the members of ``gru_mmuops`` this build fills
    ops: ClassVar[frozenset[str]] = frozenset({"invalidate_range_start", "invalidate_range_end", "release"})

    def mmu_find_ops(self, driver: GruDriverBase, mm: MM) -> LegacyGruMMStruct | None:
        """``mmu_find_ops``: the first subscription of this driver on ``mm``, found under plain RCU.

        Not an SRCU read section: nothing the notifier core frees waits for it.
        """
        container = mm.mmu_notifier_mm
        if container is None:
            return None
        ops = mm.kernel.drivers.ops_of(driver)
        walk_point = sync.backend().walk_point
        for sub in container.subscriptions:
            if walk_point is not None:
                walk_point(sub)
            if sub.ops is ops:
                return cast(LegacyGruMMStruct, sub)
        return None

    def gru_register_mmu_notifier(self, driver: GruDriverBase, mm: MM) -> GruMMStruct:
        """v5.3 ``gru_register_mmu_notifier``: reuse the GMS found on the list, else allocate and register one."""
        gms = self.mmu_find_ops(driver, mm)
        if gms is not None:
            gms.ms_refcnt.inc()
            return gms
        gms = LegacyGruMMStruct(len(driver.gru_base))
        driver._stat("gms_alloc")
        try:
            register_locked(gms, mm, driver=driver)
        except Exception:
            kmem.kfree(gms)
            raise
        return gms

    def gru_drop_mmu_notifier(self, driver: GruDriverBase, gms: GruMMStruct, mm: MM) -> None:
        """v5.3 ``gru_drop_mmu_notifier``: at refcount 0, unregister unless released, then free at once."""
        old = cast(LegacyGruMMStruct, gms)
        if old.ms_refcnt.dec() == 0:
            sync.yield_now()  # unlocked read of ms_released
            if not old.ms_released:
                unregister(old, mm)
            kmem.kfree(old)
            driver._stat("gms_free")

    def release(self, subscription: MMUNotifier) -> None:
        """``gru_release``: only remember that the mm is going away (unlocked store)."""
        sync.yield_now()  # unlocked store to ms_released
        cast(LegacyGruMMStruct, subscription).ms_released = True
