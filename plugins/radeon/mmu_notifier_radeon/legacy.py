"""The 5.3 radeon_mn (before patch 08): one ``radeon_mn`` per (device, mm) in a per-device hash, no refcount.

What differs from 5.4 (:mod:`mmu_notifier_radeon.radeon_mn`), as the 5.3 code does it:

* ``radeon_mn_get(rdev)``: ``down_write_killable(mmap_sem)`` (EINTR when
  killed: fault site ``radeon.mmap_lock_killable``), then ``rdev->mn_lock``,
  look the mm up in ``rdev->mn_hash``; if absent kzalloc a ``radeon_mn``
  naming the device and the mm, ``__mmu_notifier_register`` it (mmap lock
  already held) and add it to the hash. Two devices used by one process
  therefore register two notifiers on its mm;
* registration then merges and inserts under ``rmn->lock`` exactly as 5.4
  does; a failed node allocation returns -ENOMEM, harmless here (no
  reference was taken);
* ``radeon_mn_unregister``: ``rdev->mn_lock``, then (NULL check under it)
  ``rmn->lock``, remove the BO and free an emptied node. **No reference
  counting**: a ``radeon_mn`` whose tree became empty stays registered and in
  the hash for as long as the mm lives (bug 2 of patch 08: module unload
  leaves its ops on a live mm, and radeon's exit has no
  ``mmu_notifier_synchronize``);
* ``release`` only schedules ``radeon_mn_destroy`` and returns, so exit_mmap
  frees the pages while the BOs are still bound in the GTT (bug 1 of
  patch 08). The destroy work, later on the system workqueue, takes
  ``mn_lock`` and ``rmn->lock``, removes the rmn from the hash, detaches every
  BO (``bo->mn = NULL``) and frees every node, unlocks, then
  ``mmu_notifier_unregister`` (no release: the core already unlinked it; it
  waits for a grace period and drops the mm pin) and kfrees the rmn.

(reading) The destroy work can run before ``__mmu_notifier_release`` unlinked
the notifier (it unlinks after every release callback returned); its
``mmu_notifier_unregister`` then still sees it linked and calls ``release``
again, which re-queues the running work: the first run frees the
``radeon_mn`` with its work queued, and the second run touches freed memory
(scenario ``radeon-5.3-destroy-vs-release``). Tests that are not about it
keep the worker out until the exit returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmu_notifier import MM, register_locked, unregister
from mmu_notifier.errors import InterruptedCallError, NoMemoryError
from mmu_notifier.kmem import kfree
from mmu_notifier.workqueue import Work, schedule_work
from mmu_notifier_radeon.device import KernelOops, should_fail
from mmu_notifier_radeon.radeon_mn import RadeonMN, Scheme, merge_insert, remove_bo

if TYPE_CHECKING:
    from mmu_notifier_radeon.device import Radeon, RadeonBO, RadeonDevice

__all__ = ["LegacyRadeonMN", "Scheme53"]


class LegacyRadeonMN(RadeonMN):
    """The 5.3 ``struct radeon_mn``: also ``rdev``, ``mm`` (in the embedded notifier), the destroy ``work``."""

    def __init__(self, rdev: RadeonDevice) -> None:
        super().__init__()
        self.rdev = rdev
        self.work: Work | None = None


class Scheme53(Scheme):
    """Linux 5.3: the per-device hash of ``radeon_mn`` under ``rdev->mn_lock``."""

    version = "5.3"
    ops = frozenset({"release", "invalidate_range_start"})

    def radeon_mn_get(self, rdev: RadeonDevice, mm: MM) -> LegacyRadeonMN:
        """Find or create (and register) the device's ``radeon_mn`` of ``mm``."""
        module = rdev.module
        if should_fail(module.kernel, "radeon.mmap_lock_killable"):
            raise InterruptedCallError("radeon_mn_get: down_write_killable(mmap_sem) interrupted by a fatal signal")
        mm.mmap_lock.down_write()
        try:
            with rdev.mn_lock:
                rmn = rdev.mn_hash.get(mm)
                if rmn is not None:
                    assert isinstance(rmn, LegacyRadeonMN)
                    return rmn
                if should_fail(module.kernel, "radeon.alloc_notifier"):
                    raise NoMemoryError("radeon_mn_get: kzalloc failed")
                rmn = LegacyRadeonMN(rdev)
                register_locked(rmn, mm, driver=module.driver)
                module.rmns[id(rmn)] = f"radeon_mn of {rdev.name} and mm {mm.id}"
                module.stat("rmn_alloc")
                rdev.mn_hash[mm] = rmn
                return rmn
        finally:
            mm.mmap_lock.up_write()

    def register(self, rdev: RadeonDevice, bo: RadeonBO, addr: int, mm: MM) -> None:
        """``radeon_mn_get``, then merge and insert under ``rmn->lock`` (no reference is taken)."""
        module = rdev.module
        rmn = self.radeon_mn_get(rdev, mm)
        with rmn.lock:
            ok = merge_insert(rmn, bo, addr, lambda: should_fail(module.kernel, "radeon.node_alloc"))
        if not ok:
            module.stat("node_alloc_failed")
            raise NoMemoryError(f"radeon_mn_register: no memory for the node of {bo!r}")
        module.stat("register")

    def unregister(self, rdev: RadeonDevice, bo: RadeonBO) -> None:
        """Under ``rdev->mn_lock``: NULL check (5.3 always had it), ``rmn->lock``, remove; no put."""
        with rdev.mn_lock:
            rmn = bo.mn
            if rmn is None:
                if rdev.module.config.unpaired_unregister_guard:
                    return
                raise KernelOops(f"radeon_mn_unregister: NULL pointer dereference freeing {bo!r}")
            with rmn.lock:
                remove_bo(rmn, bo)
        bo.mn = None
        rdev.module.stat("unregister")

    def release(self, module: Radeon, rmn: RadeonMN, mm: MM) -> None:
        """``INIT_WORK`` + ``schedule_work(radeon_mn_destroy)``, and return at once."""
        assert isinstance(rmn, LegacyRadeonMN)
        if rmn.work is None:  # INIT_WORK: the model keeps one work item per radeon_mn
            rmn.work = Work(lambda: self.destroy(module, rmn, mm), name="radeon_mn_destroy")
        schedule_work(rmn.work, module.kernel)
        module.stat("release_scheduled")

    def destroy(self, module: Radeon, rmn: LegacyRadeonMN, mm: MM) -> None:
        """``radeon_mn_destroy`` (the work): unhash, detach every BO, free the nodes, unregister, kfree."""
        rdev = rmn.rdev
        with rdev.mn_lock:
            with rmn.lock:
                if rdev.mn_hash.get(mm) is rmn:
                    del rdev.mn_hash[mm]
                for node in rmn.nodes():
                    rmn.objects.remove(node)
                    for bo in node.bos:
                        bo.mn = None
                        bo.mn_node = None
                    node.bos = []
        unregister(rmn, mm)
        module.rmns.pop(id(rmn), None)
        module.stat("rmn_free")
        kfree(rmn)

    def module_exit(self, module: Radeon) -> None:
        """5.3's ``radeon_exit`` had no ``mmu_notifier_synchronize``: nothing for the notifiers."""
