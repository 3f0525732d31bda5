"""The documented driver pattern for interval notifiers (``Documentation/vm/hmm.rst``, 5.5), as a reusable helper.

A driver mirroring part of an address space through an
:class:`~mmu_notifier.interval.MMUIntervalNotifier` keeps one lock (the
document's ``driver->update``) that both sides take:

* its ``invalidate`` hook takes the lock, records the collision with
  ``interval_set_seq(sub, cur_seq)``, tears the device translations of the
  range down and unlocks (:meth:`IntervalMirror.invalidate`); for a
  non-blockable range it only try-locks and refuses (returns ``False``) if it
  would have to wait;
* its fault path pins the mm (``mmget_not_zero``), then loops:
  ``seq = interval_read_begin(sub)``; collect the CPU pages under the mmap
  lock for read (``hmm_range_fault``; ``BusyError`` restarts); take the lock;
  if ``interval_read_retry(sub, seq)`` drop it and restart; else program the
  device and unlock (:meth:`IntervalMirror.fault`).

The helper checks the two rules a driver most easily breaks:
``interval_read_begin`` must never be called holding the lock ``invalidate``
takes (it may sleep until an invalidation that needs that lock ends: the
kernel catches it with lockdep's annotation in ``read_begin``), and
``interval_read_retry`` must be called holding it (otherwise an invalidation
can slip in between the check and the programming of the device). Either
mistake is a :class:`~mmu_notifier.errors.MisuseError` naming the lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from mmu_notifier import sync
from mmu_notifier.errors import BadAddressError, BusyError, MisuseError
from mmu_notifier.interval import MMUIntervalNotifier, interval_read_begin, interval_read_retry, interval_set_seq
from mmu_notifier.range import Range

__all__ = ["IntervalMirror"]

T = TypeVar("T")
R = TypeVar("R")


class IntervalMirror:
    """One driver lock (``driver->update``) and the read_begin / fault / read_retry loop around it.

    Share one instance between the ``invalidate`` hook and the fault path of
    the subscriptions it guards (a device page table, an umem, a BO ...).
    ``retries`` counts the collisions seen by :meth:`fault`.
    """

    __slots__ = ("update", "retries")

    def __init__(self, name: str = "driver->update") -> None:
        self.update = sync.Mutex(name)
        self.retries = 0

    def __repr__(self) -> str:
        return f"<IntervalMirror {self.update.name} retries={self.retries}>"

    # -- the invalidate side -------------------------------------------------------
    def invalidate(
        self, sub: MMUIntervalNotifier, range: Range, cur_seq: int, teardown: Callable[[int, int], None]
    ) -> bool:
        """The body of an ``invalidate`` hook: under the lock, ``set_seq`` then ``teardown(start, end)``.

        ``teardown`` gets the part of ``range`` that intersects the
        subscription (``[start, end)``). A non-blockable range only
        try-locks; if the lock is busy the answer is ``False`` (the core
        unwinds and the start fails with -EAGAIN). Returns ``True`` otherwise.
        """
        lock = self.update
        if range.blockable:
            lock.lock()
        elif not lock.trylock():
            return False
        try:
            interval_set_seq(sub, cur_seq)
            teardown(max(range.start, sub.start), min(range.end, sub.last + 1))
        finally:
            lock.unlock()
        return True

    # -- the fault side ------------------------------------------------------------
    def read_begin(self, sub: MMUIntervalNotifier) -> int:
        """:func:`~mmu_notifier.interval.interval_read_begin`, refused while holding the driver lock."""
        if self.update.held_by_current():
            raise MisuseError(f"interval_read_begin of {sub!r} called holding {self.update.name}, which its "
                              f"invalidate takes: it would wait for an invalidation that waits for the lock")
        return interval_read_begin(sub)

    def read_retry(self, sub: MMUIntervalNotifier, seq: int) -> bool:
        """:func:`~mmu_notifier.interval.interval_read_retry`, refused unless the driver lock is held."""
        if not self.update.held_by_current():
            raise MisuseError(f"interval_read_retry of {sub!r} called without holding {self.update.name}: an "
                              f"invalidation could run between the check and programming the device")
        return interval_read_retry(sub, seq)

    def fault(
        self,
        sub: MMUIntervalNotifier,
        collect: Callable[[], T],
        program: Callable[[T], R],
        *,
        max_tries: int | None = None,
    ) -> R:
        """Fault through ``sub``: ``collect()`` the CPU side, then ``program(collected)`` the device.

        ``collect`` runs under the mmap lock for read and may raise
        :class:`~mmu_notifier.errors.BusyError` to restart (``hmm_range_fault``'s
        -EBUSY); ``program`` runs under the driver lock, only if no
        invalidation touched ``sub`` since ``read_begin``; its result is
        returned. Raises :class:`~mmu_notifier.errors.BadAddressError` if the
        mm has exited, and ``BusyError`` after ``max_tries`` collisions (the
        kernel's fault timeout); without ``max_tries`` it retries until it
        succeeds (each ``read_begin`` waits for the colliding invalidation).
        """
        mm = sub.mm
        if mm is None or not sub.inserted:
            raise MisuseError(f"fault through {sub!r}, which is not inserted")
        if not mm.mmget_not_zero():
            raise BadAddressError(f"fault through {sub!r}: mm {mm.id} has exited")
        tries = 0
        try:
            while True:
                if max_tries is not None and tries >= max_tries:
                    raise BusyError(f"fault through {sub!r}: {tries} collisions with invalidations in a row")
                tries += 1
                seq = self.read_begin(sub)
                mm.mmap_lock.down_read()
                try:
                    collected = collect()
                except BusyError:
                    self.retries += 1
                    continue
                finally:
                    mm.mmap_lock.up_read()
                with self.update:
                    if self.read_retry(sub, seq):
                        self.retries += 1
                        continue
                    return program(collected)
        finally:
            mm.mmput()
