"""``struct hmm`` of Linux 5.4: one per mm, shared by every mirror, held through get/put.

Models ``mm/hmm.c`` after patch 05 of the get/put series ("mm/hmm: convert to
use mmu_notifier_get/put"): the object *is* the mm's ``hmm`` subscription,
allocated by ``alloc_notifier`` the first time a mirror registers on the mm,
with ``users`` equal to the number of registered mirrors, and freed by the
core after the last mirror's ``mmu_notifier_put`` and a grace period.

Locking (as in the kernel):

* ``mirrors`` is guarded by ``mirrors_sem``: written by mirror (un)registration,
  read by every invalidation start and by release while they call into the
  mirrors;
* ``ranges``, every range's ``valid`` flag and ``notifiers`` are guarded by
  ``ranges_lock`` (a spinlock, never held across a mirror callback);
* ``wq`` wakes the waiters of :func:`mmu_notifier_hmm.range_wait_until_valid`
  when ``notifiers`` returns to zero.

Lifetime: ranges do not pin the object (5.4 dropped that kref); they pin
``mm_users`` instead, which keeps ``release`` from running while a range is
registered, and a driver may not unregister its mirror while it has ranges.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from mmu_notifier import MM, Driver, MMUNotifier, Range, get_locked, put, sync
from mmu_notifier.log import LOG

if TYPE_CHECKING:
    from mmu_notifier_hmm.mirror import HmmMirror
    from mmu_notifier_hmm.range import HmmRange

EAGAIN = -errno.EAGAIN


class Hmm(MMUNotifier):
    """``struct hmm`` (5.4): the per-mm state every HMM mirror of that mm shares."""

    #: the range API (``hmm_range_register`` ...) exists for this object's kernel (5.5 removed it)
    range_api = True

    def __init__(self) -> None:
        super().__init__()
        self.mirrors: list[HmmMirror] = []
        self.mirrors_sem = sync.RWSemaphore("hmm->mirrors_sem")
        self.ranges: list[HmmRange] = []
        self.ranges_lock = sync.SpinLock("hmm->ranges_lock")
        #: invalidations between their start and their end (``hmm->notifiers``)
        self.notifiers = 0
        self.wq = sync.WaitQueue("hmm->wq")

    @property
    def address_space(self) -> MM:
        """The mm (``hmm->mmu_notifier.mm``); stable while a mirror holds its reference."""
        mm = self.mm
        assert mm is not None, "struct hmm used before registration"
        return mm

    # -- references: how mirrors and ranges hold the object ------------------
    def put_mirror(self) -> None:
        """A mirror drops its reference (``hmm_mirror_unregister``): ``mmu_notifier_put``."""
        put(self)

    def pin_for_range(self) -> None:
        """A range was registered. In 5.4 it pins ``mm_users`` only, not the struct hmm."""

    def unpin_for_range(self) -> None:
        """A range was unregistered: nothing to drop in 5.4 (see :meth:`pin_for_range`)."""

    # -- mmu_notifier callbacks --------------------------------------------------
    def release(self) -> None:
        """``hmm_release``: the mm is being torn down; tell every mirror.

        A registered range holds ``mm_users``, so none can exist here (the
        kernel WARNs if one does). Mirrors are called under ``mirrors_sem``
        for read, so a mirror's ``release`` must not unregister the mirror.
        """
        with self.ranges_lock:
            left = len(self.ranges)
        if left:
            self.address_space.kernel.warn(f"hmm_release: {left} range(s) still registered")
        self.mirrors_sem.down_read()
        try:
            for mirror in self.mirrors:
                mirror.release()
        finally:
            self.mirrors_sem.up_read()

    def invalidate_range_start(self, nrange: Range) -> int:
        """``hmm_invalidate_range_start``: count the invalidation, invalidate ranges, sync mirrors.

        Returns 0, or ``-EAGAIN`` for a non-blockable range when ``mirrors_sem``
        is contended or a mirror refused. A refusal is legal only then; any
        other non-zero return of a mirror is WARNed and ignored. A failed
        start gets no end from the core, so it undoes its own count here.
        """
        with self.ranges_lock:
            self.notifiers += 1
            for range in self.ranges:
                # The kernel's overlap test: a range starting exactly at nrange.end is hit too.
                if not (nrange.end < range.start or nrange.start >= range.end):
                    range.valid = False
        ret = 0
        if nrange.blockable:
            self.mirrors_sem.down_read()
        elif not self.mirrors_sem.down_read_trylock():
            ret = EAGAIN
        if not ret:
            try:
                ret = self._sync_mirrors(nrange)
            finally:
                self.mirrors_sem.up_read()
        if ret:
            self.notifiers_decrement()
            if LOG.on:
                LOG.event("hmm.start_refused", mm=self.address_space.id, start=nrange.start, end=nrange.end)
        return ret

    def _sync_mirrors(self, nrange: Range) -> int:
        """Call every mirror's ``sync_cpu_device_pagetables``; caller holds ``mirrors_sem`` for read."""
        for mirror in self.mirrors:
            rc = mirror.sync_cpu_device_pagetables(nrange)
            if not rc:
                continue
            if nrange.blockable or rc != EAGAIN:
                mode = "blockable" if nrange.blockable else "non-blockable"
                self.address_space.kernel.warn(
                    f"hmm: {type(mirror).__name__}.sync_cpu_device_pagetables returned {rc} for a {mode} range"
                )
                continue
            return EAGAIN
        return 0

    def invalidate_range_end(self, nrange: Range) -> None:
        """``hmm_invalidate_range_end``: uncount the invalidation."""
        self.notifiers_decrement()

    def notifiers_decrement(self) -> None:
        """``notifiers_decrement``: the last invalidation in flight revalidates every range and wakes waiters."""
        with self.ranges_lock:
            self.notifiers -= 1
            if not self.notifiers:
                for range in self.ranges:
                    range.valid = True
                self.wq.wake_up_all()

    def free(self) -> None:
        """``hmm_free_notifier``: WARN if ranges or mirrors are left; the core then frees the memory."""
        if self.ranges or self.mirrors:
            self.address_space.kernel.warn(
                f"hmm freed with {len(self.ranges)} range(s) and {len(self.mirrors)} mirror(s) left"
            )


class HmmScheme54:
    """The 5.4 life cycle (``scheme = "5.4"``): ``mmu_notifier_get_locked``/``put`` of one :class:`Hmm` per mm."""

    def hmm_get_locked(self, driver: Driver, mm: MM) -> Hmm:
        """``mmu_notifier_get_locked``, allocating through ``alloc_notifier`` on first use."""
        hmm = get_locked(driver, mm)
        assert isinstance(hmm, Hmm)
        return hmm

    def alloc_notifier(self, mm: MM) -> Hmm:
        """``hmm_alloc_notifier``: a fresh struct hmm, no mirror, no range, nothing in flight."""
        return Hmm()
