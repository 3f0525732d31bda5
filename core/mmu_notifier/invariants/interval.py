"""Invariants 17 to 23 of the reference (interval notifiers, 5.5), checkable on any run.

Two parts, as the rest of :mod:`mmu_notifier.invariants` for the list subscribers:

* :class:`IntervalRecorder` is a non-driver plugin whose pluggy wrapper sees
  every ``invalidate`` call of every driver: it judges at once what can be
  judged inside the call (``cur_seq`` odd and equal to the mm's sequence, the
  subscription inserted and not freed) and records each call (range,
  ``cur_seq``, whether the driver called ``interval_set_seq``) for the checks
  that need the whole run;
* :func:`check_state` judges an mm's interval state at a point where the
  caller knows how many invalidations are open (sequence parity, the
  deferred list, the count of active ranges, every subscription's sequence),
  and :func:`expected_hits` says which subscriptions a range must call.

Every check returns a list of :class:`~mmu_notifier.invariants.Violation`;
nothing here takes a model lock or reaches a scheduling point.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmu_notifier.hookspecs import hookimpl
from mmu_notifier.interval import IntervalState, MMUIntervalNotifier
from mmu_notifier.invariants.violations import InvariantViolation as Violation
from mmu_notifier.kmem import is_freed

if TYPE_CHECKING:
    from mmu_notifier.kernel import Kernel
    from mmu_notifier.mm import MM
    from mmu_notifier.range import Range

__all__ = [
    "CHECKS",
    "INTERVAL_DISPATCH",
    "INTERVAL_READERS",
    "INTERVAL_RELEASE",
    "INTERVAL_REMOVE",
    "INTERVAL_SEQUENCE",
    "IntervalCall",
    "IntervalRecorder",
    "check_state",
    "expected_hits",
    "state_of",
]

#: the mm's sequence: starts at 2, even when idle, odd while a hit (or an insert) is active; cur_seq odd (inv. 17-19)
INTERVAL_SEQUENCE = "interval-sequence"
#: one invalidate per intersecting subscription of the tree as the range began (inv. 20)
INTERVAL_DISPATCH = "interval-dispatch"
#: read_begin waits exactly while its subscription's epoch runs; read_retry iff set_seq (inv. 21)
INTERVAL_READERS = "interval-readers"
#: no invalidate after remove returned, and the mm pin is dropped (inv. 22)
INTERVAL_REMOVE = "interval-remove"
#: one blockable RELEASE invalidate over the whole address space per subscription at exit (inv. 23)
INTERVAL_RELEASE = "interval-release"

CHECKS: dict[str, str] = {
    INTERVAL_SEQUENCE: "the mm's interval sequence starts at 2, only grows, is even whenever no range is active "
    "and odd while an active range hit a subscription (or a subscription was inserted during one); the "
    "tree changes only while it is even, the deferred list is empty when it is even, every start counts "
    "as active until its end, and every cur_seq passed to invalidate is odd (inv. 17-19)",
    INTERVAL_DISPATCH: "each range calls invalidate exactly once on every subscription whose [start, last] "
    "intersects [range.start, range.end - 1] and that was in the tree when the range began, and on no "
    "other (inv. 20)",
    INTERVAL_READERS: "read_begin returns at once unless its subscription is under an active invalidation (or was "
    "inserted during one), and then only after it ended; read_retry is true iff invalidate called set_seq on "
    "the subscription since read_begin (inv. 21)",
    INTERVAL_REMOVE: "after remove returned, invalidate is never called on the subscription again and the mm "
    "pin insert took is dropped (inv. 22)",
    INTERVAL_RELEASE: "at mm exit every subscription gets exactly one invalidate with event RELEASE over the "
    "whole address space, blockable (inv. 23)",
}


def state_of(mm: MM) -> IntervalState | None:
    """The mm's interval state (``None`` until the first interval insert)."""
    container = mm.mmu_notifier_mm
    return None if container is None else container.interval


def expected_hits(state: IntervalState, start: int, end: int) -> list[MMUIntervalNotifier]:
    """The subscriptions a range ``[start, end)`` starting now must call, in address order (brute force)."""
    return [sub for sub in state.itree if sub.start <= end - 1 and sub.last >= start]


def check_state(mm: MM, active: int | None = 0) -> list[Violation]:
    """Judge ``mm``'s interval state; ``active`` is the number of ranges the caller knows are open (None: unknown)."""
    state = state_of(mm)
    if state is None:
        return []
    found: list[Violation] = []
    seq = state.invalidate_seq
    odd = bool(seq & 1)

    def violate(message: str) -> None:
        found.append(Violation(INTERVAL_SEQUENCE, f"mm {mm.id}: {message}"))

    if seq < 2:
        violate(f"invalidate_seq is {seq}; it starts at 2 and only grows")
    if active is not None and state.active_invalidate_ranges != active:
        violate(f"active_invalidate_ranges is {state.active_invalidate_ranges} but {active} range(s) are open "
                f"(every start counts until its end)")
    if state.active_invalidate_ranges == 0 and odd:
        violate(f"invalidate_seq {seq} is odd with no active range")
    if not odd and state.deferred:
        violate(f"{len(state.deferred)} deferred insert(s)/remove(s) left with the even sequence {seq}")
    for sub in state.itree:
        if is_freed(sub):
            found.append(Violation(INTERVAL_REMOVE, f"mm {mm.id}: a freed {sub!r} is still in the interval tree"))
            continue
        if not sub.invalidate_seq & 1 or sub.invalidate_seq > seq:
            violate(f"{sub!r} has sequence {sub.invalidate_seq}: a subscription's is odd and never ahead of the "
                    f"mm's {seq}")
    return found


@dataclass(frozen=True, slots=True)
class IntervalCall:
    """One ``invalidate`` call the recorder saw."""

    sub: MMUIntervalNotifier
    range: Range
    cur_seq: int
    #: the driver called ``interval_set_seq(sub, cur_seq)`` during the call
    set_seq: bool
    result: Any


class IntervalRecorder:
    """A pluggy wrapper around every driver's ``invalidate`` that records and judges each call.

    Install with :meth:`install`; schedule-neutral (no model lock, no
    scheduling point), thread-safe.
    """

    def __init__(self) -> None:
        self.kernel: Kernel | None = None
        self.calls: list[IntervalCall] = []
        self.violations: list[Violation] = []
        self._lock = threading.Lock()

    def install(self, kernel: Kernel) -> IntervalRecorder:
        """Register as a plugin of ``kernel``; returns self."""
        self.kernel = kernel
        kernel.drivers.add_plugin(self, name="mmu_notifier.invariants.interval")
        return self

    def uninstall(self) -> None:
        """Remove the wrapper again."""
        if self.kernel is not None:
            self.kernel.drivers.remove_plugin(self)
            self.kernel = None

    def calls_for(self, range: Range) -> list[IntervalCall]:
        """The calls a range made (in call order)."""
        with self._lock:
            return [call for call in self.calls if call.range is range]

    def calls_on(self, sub: MMUIntervalNotifier) -> list[IntervalCall]:
        """The calls a subscription received (in call order)."""
        with self._lock:
            return [call for call in self.calls if call.sub is sub]

    def take_violations(self) -> list[Violation]:
        """The violations seen during calls since the last take."""
        with self._lock:
            found, self.violations = self.violations, []
        return found

    def _violate(self, check: str, message: str) -> None:
        with self._lock:
            self.violations.append(Violation(check, message))

    @hookimpl(wrapper=True)
    def invalidate(self, subscription: MMUIntervalNotifier, range: Range, cur_seq: int) -> Generator[None, Any, Any]:
        """Judge the call as it starts; record whether the driver called ``set_seq``."""
        sub = subscription
        if is_freed(sub):
            self._violate(INTERVAL_REMOVE, f"invalidate called on a freed interval subscription {sub!r}")
            return (yield)
        state = state_of(range.mm)
        if not cur_seq & 1:
            self._violate(INTERVAL_SEQUENCE, f"invalidate of {sub!r} got the even cur_seq {cur_seq}")
        elif state is not None and state.invalidate_seq != cur_seq:
            self._violate(INTERVAL_SEQUENCE, f"invalidate of {sub!r} got cur_seq {cur_seq} while the mm's sequence "
                                             f"is {state.invalidate_seq}")
        result = yield
        set_seq = not is_freed(sub) and sub.invalidate_seq == cur_seq
        with self._lock:
            self.calls.append(IntervalCall(sub, range, cur_seq, set_seq, result))
        return result
