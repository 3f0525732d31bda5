"""The recorder: a non-driver plugin that sees every callback the core delivers to any driver.

Models the bookkeeping a kernel debugging aid keeps (KASAN's allocation
tracking, lockdep's context checks) as pluggy wrappers
(``@hookimpl(wrapper=True)``, registered with ``kernel.drivers.add_plugin``).
Per subscription it keeps the allocation, frees, releases, running callbacks
and started ranges. What can be judged at once (a free overlapping a running
callback, a callback after release, an end without its start, a sleep in a
non-blockable range) is recorded as it happens in :attr:`Recorder.violations`;
the rest is judged on request by the concern modules of this package
(:mod:`.invalidation`, :mod:`.teardown`, :mod:`.leaks`), when the run is
quiescent (no invalidation in flight).
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Generator, Iterable
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmu_notifier import sync
from mmu_notifier.errors import SleepInAtomicError
from mmu_notifier.hookspecs import hookimpl
from mmu_notifier.invariants import invalidation, leaks, teardown
from mmu_notifier.invariants.violations import (
    ALLOC_FREE,
    CALLBACKS,
    NONBLOCK,
    PAIRING,
    RELEASE,
    InvariantViolation,
    subscription_label,
)
from mmu_notifier.kmem import is_freed
from mmu_notifier.notifier import MMUNotifier
from mmu_notifier.sync import BargingLock, ThreadBackend

if TYPE_CHECKING:
    from mmu_notifier.kernel import Kernel
    from mmu_notifier.mm import MM
    from mmu_notifier.pagetable import PTE
    from mmu_notifier.range import Range

_EAGAIN = -errno.EAGAIN


@dataclass(eq=False)
class SubscriptionRecord:
    """What the recorder saw of one subscription."""

    sub: MMUNotifier
    driver: str = "?"
    mm_id: int | None = None
    #: seen coming out of ``alloc_notifier`` (False for one registered with plain ``register``)
    allocated: bool = False
    frees: int = 0
    releases: int = 0
    #: a release callback returned
    released: bool = False
    #: callbacks running on it now, by name
    running: dict[str, int] = field(default_factory=dict)
    #: ranges whose start it received and whose end it has not (by ``id(range)``)
    open_ranges: dict[int, Range] = field(default_factory=dict)
    #: how many callbacks of each kind it received
    calls: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class RangeState:
    """One invalidation as the recorder follows it across the subscriptions it is delivered to."""

    range: Range
    refused: bool = False
    #: subscriptions that received its start and not yet its end
    open: int = 0


class Recorder:
    """Pluggy wrappers around every driver callback that record what the core delivered.

    Install with :meth:`install` (``kernel.drivers.add_plugin``); it then sees
    the callbacks of every driver of that kernel. Thread-safe (the default
    backend runs SRCU callbacks on their own thread) and schedule-neutral
    (it never reaches a scheduling point of :mod:`mmu_notifier.sync`).
    """

    def __init__(self) -> None:
        self.kernel: Kernel | None = None
        self.records: dict[int, SubscriptionRecord] = {}
        #: violations seen as they happened (the quiescent checks are methods)
        self.violations: list[InvariantViolation] = []
        #: every non-blockable start a driver refused: (driver, range)
        self.refusals: list[tuple[str, Range]] = []
        #: invalidations that ended since :meth:`take_ended` was last called: (mm id, start, end, event name)
        self.ended: list[tuple[int, int, int, str]] = []
        #: per range (by ``id``) in flight: refused or not, how many subscriptions have it open; a range is
        #: forgotten once its last end arrived (a refused one is kept: a late end is judged by it)
        self.ranges: dict[int, RangeState] = {}
        #: per mm (by ``id``): the (subscription, range) pairs started and not yet ended, so "is an
        #: invalidation of this mm in flight?" costs O(1) whatever the number of mms and ranges
        self.open_by_mm: dict[int, int] = {}
        #: per mm (by ``mm.id``): invalidation starts delivered so far (counted as a start callback begins) and
        #: subscriptions of the mm freed so far (counted as ``free_notifier`` begins), so a check on OS threads
        #: can tell that an invalidation began, or a subscription was freed, while it read (see :meth:`quiet_seq`)
        self.changes_by_mm: dict[int, int] = {}
        #: guards every field above; the checks of this package take it too. Taken about three times per
        #: event by every model thread, so on OS threads a plain ``threading.Lock`` would convoy with the GIL
        #: (see :class:`mmu_notifier.sync.BargingLock`); under the deterministic scheduler (made there: one OS
        #: thread runs every model thread) a plain lock, entered in C, is all it needs
        self.lock: AbstractContextManager[Any] = (
            BargingLock() if isinstance(sync.backend(), ThreadBackend) else threading.Lock()
        )

    # -- installation -------------------------------------------------------------
    def install(self, kernel: Kernel) -> Recorder:
        """Register as a plugin of ``kernel`` (before or after its drivers); returns self."""
        self.kernel = kernel
        kernel.drivers.add_plugin(self, name="mmu_notifier.invariants")
        return self

    def uninstall(self) -> None:
        """Remove the wrappers again."""
        if self.kernel is not None:
            self.kernel.drivers.remove_plugin(self)
            self.kernel = None

    # -- bookkeeping ----------------------------------------------------------------
    def record_of(self, sub: MMUNotifier) -> SubscriptionRecord:
        """The record of ``sub``, made on first sight (a subscription registered without alloc_notifier)."""
        with self.lock:
            return self._record(sub)

    def _record(self, sub: MMUNotifier) -> SubscriptionRecord:
        rec = self.records.get(id(sub))
        if rec is None or rec.sub is not sub:
            rec = SubscriptionRecord(sub)
            self.records[id(sub)] = rec
        if rec.driver == "?" and not is_freed(sub) and sub.ops is not None:
            rec.driver = sub.ops.name
            rec.mm_id = sub.mm.id if sub.mm is not None else None
        return rec

    def _closed(self, range: Range) -> None:
        """One (subscription, ``range``) pair ended; caller holds ``lock``."""
        mm_key = id(range.mm)
        left = self.open_by_mm[mm_key] - 1
        if left:
            self.open_by_mm[mm_key] = left
        else:
            del self.open_by_mm[mm_key]

    def in_flight(self, mm: MM) -> bool:
        """True while some invalidation of ``mm`` has started on a subscription and not yet ended (O(1))."""
        with self.lock:
            return id(mm) in self.open_by_mm

    def quiet_seq(self, mm: MM) -> int | None:
        """``None`` while an invalidation of ``mm`` is in flight, else a count of what changed under ``mm``.

        The count is the starts of invalidations of ``mm`` delivered and the subscriptions of ``mm`` freed
        so far. A check that reads the device's translations and the page table is quiescent only if
        nothing of the kind happened while it read; on OS threads another thread may begin an
        invalidation of the mm (reclaim, migration), and the mm's own process may tear its devices down
        (a subscription put, then freed after the grace period) while the background thread's check
        reads them. The check reads this before and after its reads and keeps what it found only if both
        are the same number, as a reader of ``mmu_interval_read_begin``/``mmu_interval_read_retry``
        does. Both are counted as their callback begins: before the driver drops or frees anything, and
        before the kernel changes the page table after the starts.
        """
        with self.lock:
            if id(mm) in self.open_by_mm:
                return None
            return self.changes_by_mm.get(mm.id, 0)

    def _violate(self, check: str, message: str) -> None:
        self.violations.append(InvariantViolation(check, message))

    @contextmanager
    def _callback(self, name: str, sub: MMUNotifier, range: Range | None = None) -> Generator[SubscriptionRecord]:
        """Bracket one callback on ``sub``: judge whether it may run now, count it as running."""
        with self.lock:
            if is_freed(sub):
                self._violate(ALLOC_FREE, f"{name} called on {sub!r}, which was already freed (use after free)")
            rec = self._record(sub)
            if rec.released and not (range is not None and id(range) in rec.open_ranges):
                self._violate(
                    RELEASE,
                    f"{name} started on {subscription_label(sub)} after its release callback returned "
                    f"(inv. 13: no callback after release)",
                )
            rec.running[name] = rec.running.get(name, 0) + 1
            rec.calls[name] = rec.calls.get(name, 0) + 1
        try:
            yield rec
        finally:
            with self.lock:
                left = rec.running[name] - 1
                if left:
                    rec.running[name] = left
                else:
                    del rec.running[name]

    def _raised(self, name: str, sub: MMUNotifier, error: BaseException, range: Range | None = None) -> None:
        if isinstance(error, SleepInAtomicError):
            where = f" for {range!r}" if range is not None else ""
            self._violate(NONBLOCK, f"{name} of {subscription_label(sub)}{where} slept: {error}")
        elif isinstance(error, Exception):
            self._violate(CALLBACKS, f"{name} of {subscription_label(sub)} raised {type(error).__name__}: {error}")

    # -- the wrappers -----------------------------------------------------------------
    @hookimpl(wrapper=True)
    def alloc_notifier(self, mm: MM) -> Generator[None, Any, Any]:
        """Record every object ``alloc_notifier`` hands to the core."""
        sub = yield
        if isinstance(sub, MMUNotifier):
            with self.lock:
                rec = SubscriptionRecord(sub, mm_id=mm.id, allocated=True)
                self.records[id(sub)] = rec
        return sub

    @hookimpl(wrapper=True)
    def free_notifier(self, subscription: MMUNotifier) -> Generator[None, Any, Any]:
        """Judge each free: once only, unlinked, with no callback still running on it (inv. 2, 3)."""
        sub = subscription
        with self.lock:
            if is_freed(sub):
                self._violate(
                    ALLOC_FREE,
                    f"free_notifier called on {sub!r}, which was already freed: freed twice "
                    f"(the driver must not free a subscription itself; free_notifier is the one free)",
                )
            else:
                rec = self._record(sub)
                if rec.mm_id is not None:
                    self.changes_by_mm[rec.mm_id] = self.changes_by_mm.get(rec.mm_id, 0) + 1
                rec.frees += 1
                if rec.frees > 1:
                    self._violate(ALLOC_FREE, f"free_notifier called {rec.frees} times on {subscription_label(sub)}")
                if sub.linked:
                    self._violate(
                        ALLOC_FREE, f"free_notifier called on {subscription_label(sub)} while it is still linked"
                    )
                if rec.running:
                    running = ", ".join(sorted(rec.running))
                    self._violate(
                        ALLOC_FREE,
                        f"free_notifier of {subscription_label(sub)} overlaps its running {running}: "
                        f"freed without waiting for a grace period (inv. 3)",
                    )
        return (yield)

    @hookimpl(wrapper=True)
    def release(self, subscription: MMUNotifier, mm: MM) -> Generator[None, Any, Any]:
        """Count releases (at most one per subscription)."""
        with self._callback("release", subscription) as rec:
            with self.lock:
                rec.releases += 1
                if rec.releases > 1:
                    self._violate(RELEASE, f"release called {rec.releases} times on {subscription_label(subscription)}")
            try:
                result = yield
            except BaseException as error:
                self._raised("release", subscription, error)
                raise
            with self.lock:
                rec.released = True
            return result

    @hookimpl(wrapper=True)
    def invalidate_range_start(self, subscription: MMUNotifier, range: Range) -> Generator[None, Any, Any]:
        """Open ``(subscription, range)``; judge the return value (inv. 14, 15)."""
        sub = subscription
        with self._callback("invalidate_range_start", sub) as rec:
            key = id(range)
            with self.lock:
                mm_id = range.mm.id
                self.changes_by_mm[mm_id] = self.changes_by_mm.get(mm_id, 0) + 1
                if key in rec.open_ranges:
                    self._violate(
                        PAIRING, f"invalidate_range_start delivered twice for {range!r} to {subscription_label(sub)}"
                    )
                state = self.ranges.get(key)
                if state is None or state.range is not range:
                    self.ranges[key] = RangeState(range)
            try:
                ret = yield
            except BaseException as error:
                self._raised("invalidate_range_start", sub, error, range)
                raise
            with self.lock:
                if ret:
                    self.ranges[key].refused = True
                    if range.blockable:
                        self._violate(NONBLOCK, f"{subscription_label(sub)} refused a blockable {range!r} with {ret}")
                    elif ret != _EAGAIN:
                        self._violate(
                            NONBLOCK, f"{subscription_label(sub)} returned {ret} for {range!r}; only -EAGAIN is legal"
                        )
                    else:
                        self.refusals.append((rec.driver, range))
                elif sub.ops.invalidate_range_end is not None:
                    rec.open_ranges[key] = range
                    self.ranges[key].open += 1
                    mm_key = id(range.mm)
                    self.open_by_mm[mm_key] = self.open_by_mm.get(mm_key, 0) + 1
                # a driver without an end op (radeon) pairs nothing: its start is all it gets
                state = self.ranges[key]
                if not state.open and not state.refused:
                    del self.ranges[key]  # nothing to judge by it (as if never seen): memory stays flat
            return ret

    @hookimpl(wrapper=True)
    def invalidate_range_end(self, subscription: MMUNotifier, range: Range) -> Generator[None, Any, Any]:
        """Close ``(subscription, range)``; an end without its start is a violation."""
        sub = subscription
        with self._callback("invalidate_range_end", sub, range) as rec:
            key = id(range)
            with self.lock:
                state = self.ranges.get(key)
                if key in rec.open_ranges:
                    del rec.open_ranges[key]
                    self._closed(range)
                    if state is not None:
                        state.open -= 1
                        if not state.open and not state.refused:
                            del self.ranges[key]  # every end arrived: nothing left to judge by it
                else:
                    kernel = self.kernel
                    late = kernel is not None and kernel.end_after_failed_start
                    if not (state is not None and state.refused and late):
                        self._violate(PAIRING, f"invalidate_range_end for {range!r} without its start on "
                                               f"{subscription_label(sub)}")
            try:
                result = yield
            except BaseException as error:
                self._raised("invalidate_range_end", sub, error, range)
                raise
            with self.lock:
                self.ended.append((range.mm.id, range.start, range.end, range.event.name))
            return result

    @hookimpl(wrapper=True)
    def invalidate_range(self, subscription: MMUNotifier, mm: MM, start: int, end: int) -> Generator[None, Any, Any]:
        """A secondary-TLB flush: only checked for use after free/release."""
        return (yield from self._plain("invalidate_range", subscription))

    @hookimpl(wrapper=True)
    def clear_flush_young(self, subscription: MMUNotifier, mm: MM, start: int, end: int) -> Generator[None, Any, Any]:
        """Aging callback: only checked for use after free/release."""
        return (yield from self._plain("clear_flush_young", subscription))

    @hookimpl(wrapper=True)
    def clear_young(self, subscription: MMUNotifier, mm: MM, start: int, end: int) -> Generator[None, Any, Any]:
        """Aging callback: only checked for use after free/release."""
        return (yield from self._plain("clear_young", subscription))

    @hookimpl(wrapper=True)
    def test_young(self, subscription: MMUNotifier, mm: MM, address: int) -> Generator[None, Any, Any]:
        """Aging callback: only checked for use after free/release."""
        return (yield from self._plain("test_young", subscription))

    @hookimpl(wrapper=True)
    def change_pte(self, subscription: MMUNotifier, mm: MM, address: int, pte: PTE) -> Generator[None, Any, Any]:
        """KSM / COW replacement: only checked for use after free/release."""
        return (yield from self._plain("change_pte", subscription))

    def _plain(self, name: str, sub: MMUNotifier) -> Generator[None, Any, Any]:
        with self._callback(name, sub):
            try:
                return (yield)
            except BaseException as error:
                self._raised(name, sub, error)
                raise

    # -- quiescent checks (see the concern modules) ---------------------------------
    def check_pairing(self) -> list[InvariantViolation]:
        """:func:`mmu_notifier.invariants.invalidation.check_pairing` on this recorder."""
        return invalidation.check_pairing(self)

    def check_frees(self, settled: bool = False) -> list[InvariantViolation]:
        """:func:`mmu_notifier.invariants.teardown.check_frees` on this recorder."""
        return teardown.check_frees(self, settled)

    def check_leaks(self, held: Iterable[MMUNotifier] = ()) -> list[InvariantViolation]:
        """:func:`mmu_notifier.invariants.leaks.check_leaks` on this recorder."""
        return leaks.check_leaks(self, held)

    def take_ended(self) -> list[tuple[int, int, int, str]]:
        """The invalidations that ended since the last call (for coherence messages), and forget them."""
        with self.lock:
            ended, self.ended = self.ended, []
        return ended

    def subscriptions(self, driver: str | None = None, mm: MM | None = None) -> list[SubscriptionRecord]:
        """Records of subscriptions, optionally of one driver and/or one mm."""
        with self.lock:
            recs = list(self.records.values())
        return [
            r for r in recs
            if (driver is None or r.driver == driver) and (mm is None or r.mm_id == mm.id)
        ]
