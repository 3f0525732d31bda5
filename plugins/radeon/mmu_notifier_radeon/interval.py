"""radeon userptr on interval notifiers (``radeon_mn.c`` of 5.5, "drm/radeon: use mmu_interval_notifier_insert").

Commit 3506ff69c3ec deleted ``struct radeon_mn`` and its node tree: every
userptr BO embeds its own interval notifier (``bo->notifier``,
:class:`RadeonBONotifier`) and the core's interval tree does what radeon's
tree did.

* :meth:`Scheme55.register` (``radeon_mn_register``):
  ``mmu_interval_notifier_insert`` over exactly the BO's range (no merging:
  one BO, one interval), then an ``mmu_interval_read_begin`` whose result is
  thrown away, under the kernel's FIXME that the driver "appears to allow
  get_user_pages to run during invalidate_range_start/end";
* :meth:`Scheme55.unregister` (``radeon_mn_unregister``): nothing for a BO
  whose ``bo->notifier.mm`` is NULL (never registered: the 5.4 guard's
  successor), else ``mmu_interval_notifier_remove`` and
  ``bo->notifier.mm = NULL``;
* :func:`invalidate` (``radeon_mn_invalidate``), per BO: ``True`` at once
  for a BO not bound in the GTT; a non-blockable range over a bound BO is
  refused (``False``); otherwise reserve, wait for every fence, move to the
  CPU domain (unbind, unpin), unreserve, exactly the per-BO body of 5.4's
  start. It takes **no driver lock and never calls**
  ``mmu_interval_set_seq``: radeon's submission path does not use
  ``read_begin``/``read_retry``, so the sequence has no reader to tell. The
  race 5.5 documents stays (a submission can pin the old pages between an
  invalidation and the page-table change: ``radeon-5.5-cs-vs-madvise``).
* There is no ``release``: the core's interval teardown sends every inserted
  BO one blockable ``RELEASE`` range over the whole address space, so the
  BOs are unbound before ``exit_mmap`` (5.4's flags-0 release is gone);
* No ``alloc_notifier``/``free_notifier``: nothing is refcounted per mm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmu_notifier import (
    MM,
    Range,
    interval_notifier_insert,
    interval_notifier_remove,
    interval_read_begin,
    kmem,
    synchronize,
)
from mmu_notifier_radeon.device import RadeonBONotifier
from mmu_notifier_radeon.radeon_mn import RadeonMN, Scheme, evict

if TYPE_CHECKING:
    from mmu_notifier_radeon.device import Radeon, RadeonBO, RadeonDevice

__all__ = ["RadeonBONotifier", "Scheme55", "invalidate"]


def invalidate(module: Radeon, sub: RadeonBONotifier, range: Range) -> bool:
    """``radeon_mn_invalidate``: evict the BO if it is bound; refuse a non-blockable range over a bound BO."""
    bo = sub.bo
    if not bo.bound:  # read without the reservation, as the kernel reads the TTM state
        return True
    if not range.blockable:
        module.stat("invalidate_refused")
        return False
    evict(module, bo)
    return True


class Scheme55(Scheme):
    """Linux 5.5: one interval notifier per userptr BO; ``radeon_mn`` is gone."""

    version = "5.5"
    ops = frozenset({"invalidate"})

    def register(self, rdev: RadeonDevice, bo: RadeonBO, addr: int, mm: MM) -> None:
        """``mmu_interval_notifier_insert`` over the BO, then the FIXME's unused ``read_begin``."""
        module = rdev.module
        interval_notifier_insert(bo.notifier, mm, addr, bo.size, module.driver)
        interval_read_begin(bo.notifier)  # FIXME in 5.5: the sequence is never checked again
        module.stat("register")

    def unregister(self, rdev: RadeonDevice, bo: RadeonBO) -> None:
        """Guarded by ``bo->notifier.mm``: remove, then clear ``mm``."""
        if bo.notifier.mm is None:
            return
        interval_notifier_remove(bo.notifier)
        bo.notifier.mm = None
        rdev.module.stat("unregister")

    def free_bo(self, bo: RadeonBO) -> None:
        """The BO's memory goes, with the notifier embedded in it (poisoned: any later touch is a use after free)."""
        kmem.kfree(bo.notifier)

    def alloc_notifier(self, module: Radeon, mm: MM) -> RadeonMN:
        """Not in 5.5's ops (the core never calls it: :meth:`RadeonDriver.null_callbacks` names it)."""
        raise NotImplementedError("5.5 radeon has no alloc_notifier")

    def free_notifier(self, module: Radeon, rmn: RadeonMN) -> None:
        """Not in 5.5's ops."""
        raise NotImplementedError("5.5 radeon has no free_notifier")

    def release(self, module: Radeon, rmn: RadeonMN, mm: MM) -> None:
        """Not in 5.5's ops: the core's interval teardown invalidates every BO instead."""
        raise NotImplementedError("5.5 radeon has no release")

    def module_exit(self, module: Radeon) -> None:
        """``radeon_exit`` still ends in ``mmu_notifier_synchronize``."""
        synchronize(module.kernel)
