"""HMM of Linux 5.5: no ``hmm_mirror``, no ``struct hmm``; nouveau's SVM on interval notifiers.

"mm/hmm: remove hmm_mirror and related" (a22dd506400d) deleted the mirror
and range API; nouveau moved its SVM to interval notifiers in
"nouveau: use mmu_interval_notifier instead of hmm_mirror" (20fef4ef84bf)
and "nouveau: use mmu_notifier directly for invalidate_range_start"
(c625c274ee00). This module models that pair:

* the per-mm list notifier (:class:`Svmm55`): its ``invalidate_range_start``
  tears the device page table of every bound device down under the device's
  update lock (``svmm->mutex``), as ``nouveau_svmm_invalidate_range_start``
  does (a non-blockable range: see the deviations). No
  ``invalidate_range_end`` (the ranges and their ``notifiers`` count are
  gone);
* each device fault (:func:`fault`, ``nouveau_svm_fault`` +
  ``nouveau_range_fault``) inserts a temporary interval notifier
  (:class:`HmmIntervalNotifier`) over the faulting range, then loops:
  ``seq = mmu_interval_read_begin``; ``hmm_range_fault`` under the mmap
  lock for read (its -EBUSY is ``mmu_interval_check_retry`` failing);
  take ``svmm->mutex``; if ``mmu_interval_read_retry`` drop it and
  restart; else program the device page table and unlock; finally it removes
  the notifier;
* the notifier's ``invalidate`` (:func:`invalidate`,
  ``nouveau_svm_range_invalidate``) only records the collision:
  ``mmu_interval_set_seq`` under ``svmm->mutex`` (try-lock for a
  non-blockable range, refusing if busy). The teardown is the list
  notifier's job.

Deliberate deviations (also in the plugin README):

* the model keeps ONE shared per-mm object (:class:`Svmm55`, a subclass of
  the 5.4 :class:`~mmu_notifier_hmm.hmm.Hmm`) taken with
  ``mmu_notifier_get_locked`` and dropped with ``mmu_notifier_put``, so the
  conformance kit's list-notifier checks still apply. The kernel registers
  one ``nouveau_svmm`` list notifier per client with
  ``__mmu_notifier_register`` and frees it through ``free_notifier``; both
  shapes call every device's teardown on every invalidation;
* the list notifier keeps a ``release`` that clears every device page table
  (nouveau 5.5 has none and relies on the exit's unmap invalidations);
* a device may also keep long-lived interval notifiers (:meth:`DeviceMirror.track
  <mmu_notifier_hmm.device.DeviceMirror.track>`, what the conformance kit's
  ``map_range`` asks for); a fault inside one uses it instead of inserting a
  temporary notifier. nouveau only ever inserts the temporary ones;
* a non-blockable range (the OOM reaper): nouveau 5.5 refuses every one
  with ``-EAGAIN``. In 5.5 a list refusal after the interval notifiers
  accepted the start leaves the mm's interval sequence odd for ever (nothing
  ends it; the core models that), so the next ``read_begin`` or
  ``mmu_interval_notifier_remove`` of that mm sleeps for ever. The model
  instead try-locks ``svmm->mutex`` and tears the range down without
  sleeping, refusing only when the lock is contended (``refuse_nonblock``
  is not used in 5.5);
* the fault loop has no jiffies timeout: each ``read_begin`` sleeps until the
  colliding invalidation ended, so the loop retries until it succeeds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmu_notifier import (
    MM,
    BadAddressError,
    BusyError,
    Driver,
    MMUIntervalNotifier,
    Range,
    get_locked,
    interval_notifier_insert,
    interval_notifier_remove,
    interval_read_begin,
    interval_read_retry,
    interval_set_seq,
)
from mmu_notifier.log import LOG
from mmu_notifier_hmm.hmm import EAGAIN, Hmm
from mmu_notifier_hmm.range import HmmPfnFlag, HmmRange, range_fault

if TYPE_CHECKING:
    from mmu_notifier_hmm.device import DeviceMirror

__all__ = ["SCHEME_OPS_55", "HmmIntervalNotifier", "HmmScheme55", "Svmm55", "fault", "invalidate"]

#: The callbacks of the 5.5 ops: the list notifier's (no ``invalidate_range_end``) and the interval ``invalidate``.
SCHEME_OPS_55 = frozenset({"alloc_notifier", "free_notifier", "release", "invalidate_range_start", "invalidate"})


class Svmm55(Hmm):
    """The per-mm list notifier of 5.5 (nouveau's ``svmm->notifier``, shared per mm: see the module doc).

    The inherited ranges, ``notifiers`` and ``wq`` stay unused: 5.5 has no
    ``hmm_range_register`` (:attr:`range_api` is False, so the model refuses it).
    """

    range_api = False

    def invalidate_range_start(self, nrange: Range) -> int:
        """``nouveau_svmm_invalidate_range_start``: every device drops its translations in the range.

        ``mirrors_sem`` guards the device list as in 5.4; a non-blockable
        range fails with ``-EAGAIN`` if it is contended or a device refuses.
        There is no count of invalidations in flight and no end callback.
        """
        if nrange.blockable:
            self.mirrors_sem.down_read()
        elif not self.mirrors_sem.down_read_trylock():
            return EAGAIN
        try:
            ret = self._sync_mirrors(nrange) if nrange.blockable else self._zap_nonblock(nrange)
        finally:
            self.mirrors_sem.up_read()
        if ret and LOG.on:
            LOG.event("hmm.start_refused", mm=self.address_space.id, start=nrange.start, end=nrange.end)
        return ret

    def _zap_nonblock(self, nrange: Range) -> int:
        """Non-blockable: every device tears the range down under a try-lock; ``-EAGAIN`` if one is contended."""
        from mmu_notifier_hmm.device import DeviceMirror

        for mirror in self.mirrors:
            if isinstance(mirror, DeviceMirror):
                if not mirror.zap_trylock(nrange.start, nrange.end):
                    return EAGAIN
            elif mirror.sync_cpu_device_pagetables(nrange):
                return EAGAIN
        return 0

    def invalidate_range_end(self, nrange: Range) -> None:
        """Not in 5.5's ops (:meth:`HmmDriver.null_callbacks` names it): the core never calls it."""
        raise NotImplementedError("5.5 hmm has no invalidate_range_end")


class HmmScheme55:
    """The 5.5 life cycle (``scheme = "5.5"``): one :class:`Svmm55` per mm through get/put."""

    def hmm_get_locked(self, driver: Driver, mm: MM) -> Hmm:
        """``mmu_notifier_get_locked``, allocating through ``alloc_notifier`` on first use."""
        svmm = get_locked(driver, mm)
        assert isinstance(svmm, Svmm55)
        return svmm

    def alloc_notifier(self, mm: MM) -> Hmm:
        """A fresh per-mm list notifier with no device bound."""
        return Svmm55()


class HmmIntervalNotifier(MMUIntervalNotifier):
    """``struct svm_notifier``: an interval notifier over a faulting range, owned by one device."""

    def __init__(self, device: DeviceMirror) -> None:
        super().__init__()
        self.device = device


def invalidate(sub: HmmIntervalNotifier, range: Range, cur_seq: int) -> bool:
    """``nouveau_svm_range_invalidate``: ``mmu_interval_set_seq`` under ``svmm->mutex`` (try-lock if non-blockable)."""
    lock = sub.device.update
    if range.blockable:
        lock.lock()
    elif not lock.trylock():
        return False
    try:
        interval_set_seq(sub, cur_seq)
    finally:
        lock.unlock()
    return True


def fault(device: DeviceMirror, driver: Driver, start: int, end: int, write: bool) -> None:
    """``nouveau_svm_fault`` for ``[start, end)``: the interval loop around ``hmm_range_fault`` (see the module doc).

    Uses a tracked notifier covering the range if the device has one, else
    inserts a temporary one and removes it at the end. Raises the errors of
    ``hmm_range_fault`` (EFAULT, EPERM) and :class:`BadAddressError` once the
    mm has exited (``mmget_not_zero`` failed).
    """
    mm = device.mm
    if not mm.mmget_not_zero():
        raise BadAddressError(f"device fault {start:#x}-{end:#x}: mm {mm.id} has exited")
    try:
        sub = device.tracking(start, end)
        temporary = sub is None
        if sub is None:
            sub = HmmIntervalNotifier(device)
            interval_notifier_insert(sub, mm, start, end - start, driver)
        try:
            _fault_loop(device, sub, start, end, write)
        finally:
            if temporary:
                interval_notifier_remove(sub)
    finally:
        mm.mmput()


def _fault_loop(device: DeviceMirror, sub: HmmIntervalNotifier, start: int, end: int, write: bool) -> None:
    """``nouveau_range_fault``: read_begin, walk, lock, read_retry; program the device under the lock."""
    mm = device.mm
    flags = HmmPfnFlag.VALID | (HmmPfnFlag.WRITE if write else HmmPfnFlag.NONE)
    range = HmmRange(start, end, flags, notifier=sub)
    while True:
        range.notifier_seq = interval_read_begin(sub)
        mm.mmap_lock.down_read()
        try:
            range_fault(range)
        except BusyError:
            device.retries += 1
            continue
        finally:
            mm.mmap_lock.up_read()
        with device.update:
            if interval_read_retry(sub, range.notifier_seq):
                device.retries += 1
                continue
            device.program(range)
            return
