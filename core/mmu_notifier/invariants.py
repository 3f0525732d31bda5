"""The invariants of the get/put scheme, checkable on any run: one module for the kit and the main job.

Models what the kernel's debugging aids would tell a driver author (KASAN
for a double free, lockdep and ``might_sleep()`` for a sleep in a
non-blockable range, kmemleak for a leak) plus the property mmu notifiers
exist for: a secondary MMU never keeps translating a page the CPU no longer
maps there. The numbered invariants of the reference's section 7 are cited
as "(inv. N)".

Two parts:

* :class:`Recorder` is a non-driver plugin: its pluggy wrappers
  (``@hookimpl(wrapper=True)``, registered with
  ``kernel.drivers.add_plugin``) see every callback of every driver and keep,
  per subscription, its allocation, frees, releases, running callbacks and
  started ranges. What can be judged at once (a free overlapping a running
  callback, a callback after release, an end without its start, a sleep in a
  non-blockable range) is recorded as it happens; the rest is checked on
  request, when the run is quiescent (no invalidation in flight).
* :class:`Monitor` adds what the recorder cannot see from the callbacks: the
  attaches the run holds (through the driver-neutral
  :mod:`mmu_notifier.exerciser` contract), the address spaces, and the
  device's translations. ``Monitor.check()`` returns every violation, with a
  message that says what was expected and what was found.

Every check returns a list of :class:`Violation`; an empty list means the
invariant holds. Nothing here raises for a broken invariant, and nothing here
takes a lock of the model or calls into a driver from inside a callback, so
a check never changes the schedule of the run it observes.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Generator, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmu_notifier import exerciser as contract
from mmu_notifier.errors import SleepInAtomicError
from mmu_notifier.hookspecs import hookimpl
from mmu_notifier.notifier import MMUNotifier, is_freed

if TYPE_CHECKING:
    from mmu_notifier.exerciser import Exerciser, Handle
    from mmu_notifier.kernel import Kernel
    from mmu_notifier.mm import MM
    from mmu_notifier.pagetable import PTE
    from mmu_notifier.plugins import MMUNotifierOps
    from mmu_notifier.range import Range

__all__ = [
    "ALLOC_FREE",
    "CALLBACKS",
    "CAPABILITIES",
    "CHECKS",
    "COHERENCE",
    "EXIT_COHERENCE",
    "KERNEL",
    "LEAK",
    "NONBLOCK",
    "PAIRING",
    "REGISTRATION",
    "RELEASE",
    "Monitor",
    "Recorder",
    "SubscriptionRecord",
    "Violation",
    "check_coherence",
    "check_exit_coherence",
    "check_kernel",
    "check_registration",
    "format_violations",
]

_EAGAIN = -errno.EAGAIN

# -- check names -----------------------------------------------------------------

#: one subscription per (driver, mm), shared by every attach; a fresh one after the last detach
REGISTRATION = "one-subscription-per-mm"
#: alloc_notifier and free_notifier paired exactly once, the free after a grace period
ALLOC_FREE = "alloc-free-paired"
#: nothing allocated stays allocated once every attach was detached and synchronize ran
LEAK = "no-leak"
#: start and end paired per (subscription, range)
PAIRING = "start-end-pairing"
#: release at most once, exactly once at exit while attached; no callback after it
RELEASE = "release"
#: callbacks of a non-blockable range never sleep; they complete or refuse with -EAGAIN
NONBLOCK = "non-blockable"
#: after an invalidation ends, no device translation in its range names a stale frame
COHERENCE = "coherence"
#: after exit (and, without a release callback, after the last detach) the device translates nothing of that mm
EXIT_COHERENCE = "exit-coherence"
#: the kernel logged no WARN and no deferred callback raised
KERNEL = "kernel-clean"
#: the capabilities an exerciser declares match what the driver does
CAPABILITIES = "capabilities"
#: a callback raised an exception the kernel would not survive
CALLBACKS = "callbacks"

#: Every check name with what a violation of it means (printed by the kit and the guide).
CHECKS: dict[str, str] = {
    REGISTRATION: "every attach on an mm must share the driver's one linked subscription there (get, not a "
    "second register), with users == number of attaches; after the last detach the next attach must get a "
    "fresh subscription (inv. 1, 4)",
    ALLOC_FREE: "every subscription alloc_notifier returned must reach free_notifier exactly once, only after its "
    "last put and a grace period (no callback still running on it), and by synchronize at the latest; the "
    "driver must never free it itself (inv. 2, 3, 12)",
    LEAK: "once every attach was detached and synchronize ran, nothing the driver allocated may still be live, "
    "the device must translate nothing, and the mm's reference counts must be back where they started (inv. 6)",
    PAIRING: "every start the core delivered must be followed by its end (except after a refused non-blockable "
    "start), never an end without a start; and once every invalidation ended, the device must be able to "
    "translate again: whatever the driver's start blocked, its end must unblock (inv. 14, 15)",
    RELEASE: "release runs at most once per subscription, exactly once when the mm exits while attached, and no "
    "callback starts on a subscription after its release (inv. 9, 10, 13)",
    NONBLOCK: "in a non-blockable range (OOM reaper) a callback must not sleep (no mutex, no wait, no "
    "synchronize): it completes or returns -EAGAIN; only drivers declaring refuses_nonblock may refuse (inv. 15)",
    COHERENCE: "after any invalidation ends, no device translation in its range may name a frame the CPU page "
    "table no longer maps there: the driver must drop it in its start (or end) callback",
    EXIT_COHERENCE: "after the mm exits, the device must hold no translation of it (a driver without a release "
    "callback: once every attach on it was detached); a device access after exit must not translate anything",
    KERNEL: "the kernel must log no WARN (a bad return value, put with no users ...) and no deferred callback "
    "(free_notifier) may raise",
    CAPABILITIES: "the capabilities an exerciser declares must match the driver's hooks and behaviour",
    CALLBACKS: "a driver callback raised an exception",
}


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant: the check's name and what was expected and found."""

    check: str
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.message}"


def format_violations(violations: Sequence[Violation]) -> str:
    """A readable report: one violation per line, with the meaning of each check that failed."""
    lines = [str(v) for v in violations]
    for name in dict.fromkeys(v.check for v in violations):
        if name in CHECKS:
            lines.append(f"  ({name}: {CHECKS[name]})")
    return "\n".join(lines)


def _describe(sub: MMUNotifier) -> str:
    """A description of a subscription that never touches a freed one."""
    if is_freed(sub):
        return repr(sub)
    ops = sub.ops
    mm = sub.mm
    return f"{type(sub).__name__}@{id(sub):#x} of driver {ops.name if ops else '?'} on mm {mm.id if mm else '?'}"


# -- the recorder ----------------------------------------------------------------


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
class _RangeState:
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
        self.violations: list[Violation] = []
        #: every non-blockable start a driver refused: (driver, range)
        self.refusals: list[tuple[str, Range]] = []
        #: invalidations that ended since :meth:`take_ended` was last called: (mm id, start, end, event name)
        self.ended: list[tuple[int, int, int, str]] = []
        self._ranges: dict[int, _RangeState] = {}
        self._lock = threading.Lock()

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
        with self._lock:
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

    def _violate(self, check: str, message: str) -> None:
        self.violations.append(Violation(check, message))

    @contextmanager
    def _callback(self, name: str, sub: MMUNotifier, range: Range | None = None) -> Generator[SubscriptionRecord]:
        """Bracket one callback on ``sub``: judge whether it may run now, count it as running."""
        with self._lock:
            if is_freed(sub):
                self._violate(ALLOC_FREE, f"{name} called on {sub!r}, which was already freed (use after free)")
            rec = self._record(sub)
            if rec.released and not (range is not None and id(range) in rec.open_ranges):
                self._violate(
                    RELEASE,
                    f"{name} started on {_describe(sub)} after its release callback returned "
                    f"(inv. 13: no callback after release)",
                )
            rec.running[name] = rec.running.get(name, 0) + 1
            rec.calls[name] = rec.calls.get(name, 0) + 1
        try:
            yield rec
        finally:
            with self._lock:
                left = rec.running[name] - 1
                if left:
                    rec.running[name] = left
                else:
                    del rec.running[name]

    def _raised(self, name: str, sub: MMUNotifier, error: BaseException, range: Range | None = None) -> None:
        if isinstance(error, SleepInAtomicError):
            where = f" for {range!r}" if range is not None else ""
            self._violate(NONBLOCK, f"{name} of {_describe(sub)}{where} slept: {error}")
        elif isinstance(error, Exception):
            self._violate(CALLBACKS, f"{name} of {_describe(sub)} raised {type(error).__name__}: {error}")

    # -- the wrappers -----------------------------------------------------------------
    @hookimpl(wrapper=True)
    def alloc_notifier(self, mm: MM) -> Generator[None, Any, Any]:
        """Record every object ``alloc_notifier`` hands to the core."""
        sub = yield
        if isinstance(sub, MMUNotifier):
            with self._lock:
                rec = SubscriptionRecord(sub, mm_id=mm.id, allocated=True)
                self.records[id(sub)] = rec
        return sub

    @hookimpl(wrapper=True)
    def free_notifier(self, subscription: MMUNotifier) -> Generator[None, Any, Any]:
        """Judge each free: once only, unlinked, with no callback still running on it (inv. 2, 3)."""
        sub = subscription
        with self._lock:
            if is_freed(sub):
                self._violate(
                    ALLOC_FREE,
                    f"free_notifier called on {sub!r}, which was already freed: freed twice "
                    f"(the driver must not free a subscription itself; free_notifier is the one free)",
                )
            else:
                rec = self._record(sub)
                rec.frees += 1
                if rec.frees > 1:
                    self._violate(ALLOC_FREE, f"free_notifier called {rec.frees} times on {_describe(sub)}")
                if sub.linked:
                    self._violate(ALLOC_FREE, f"free_notifier called on {_describe(sub)} while it is still linked")
                if rec.running:
                    running = ", ".join(sorted(rec.running))
                    self._violate(
                        ALLOC_FREE,
                        f"free_notifier of {_describe(sub)} overlaps its running {running}: "
                        f"freed without waiting for a grace period (inv. 3)",
                    )
        return (yield)

    @hookimpl(wrapper=True)
    def release(self, subscription: MMUNotifier, mm: MM) -> Generator[None, Any, Any]:
        """Count releases (at most one per subscription)."""
        with self._callback("release", subscription) as rec:
            with self._lock:
                rec.releases += 1
                if rec.releases > 1:
                    self._violate(RELEASE, f"release called {rec.releases} times on {_describe(subscription)}")
            try:
                result = yield
            except BaseException as error:
                self._raised("release", subscription, error)
                raise
            with self._lock:
                rec.released = True
            return result

    @hookimpl(wrapper=True)
    def invalidate_range_start(self, subscription: MMUNotifier, range: Range) -> Generator[None, Any, Any]:
        """Open ``(subscription, range)``; judge the return value (inv. 14, 15)."""
        sub = subscription
        with self._callback("invalidate_range_start", sub) as rec:
            key = id(range)
            with self._lock:
                if key in rec.open_ranges:
                    self._violate(PAIRING, f"invalidate_range_start delivered twice for {range!r} to {_describe(sub)}")
                state = self._ranges.get(key)
                if state is None or state.range is not range:
                    self._ranges[key] = _RangeState(range)
            try:
                ret = yield
            except BaseException as error:
                self._raised("invalidate_range_start", sub, error, range)
                raise
            with self._lock:
                if ret:
                    self._ranges[key].refused = True
                    if range.blockable:
                        self._violate(NONBLOCK, f"{_describe(sub)} refused a blockable {range!r} with {ret}")
                    elif ret != _EAGAIN:
                        self._violate(NONBLOCK, f"{_describe(sub)} returned {ret} for {range!r}; only -EAGAIN is legal")
                    else:
                        self.refusals.append((rec.driver, range))
                elif sub.ops.invalidate_range_end is not None:
                    rec.open_ranges[key] = range
                    self._ranges[key].open += 1
                # a driver without an end op (radeon) pairs nothing: its start is all it gets
            return ret

    @hookimpl(wrapper=True)
    def invalidate_range_end(self, subscription: MMUNotifier, range: Range) -> Generator[None, Any, Any]:
        """Close ``(subscription, range)``; an end without its start is a violation."""
        sub = subscription
        with self._callback("invalidate_range_end", sub, range) as rec:
            key = id(range)
            with self._lock:
                state = self._ranges.get(key)
                if key in rec.open_ranges:
                    del rec.open_ranges[key]
                    if state is not None:
                        state.open -= 1
                else:
                    kernel = self.kernel
                    late = kernel is not None and kernel.end_after_failed_start
                    if not (state is not None and state.refused and late):
                        self._violate(PAIRING, f"invalidate_range_end for {range!r} without its start on "
                                               f"{_describe(sub)}")
            try:
                result = yield
            except BaseException as error:
                self._raised("invalidate_range_end", sub, error, range)
                raise
            with self._lock:
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

    # -- quiescent checks ----------------------------------------------------------
    def check_pairing(self) -> list[Violation]:
        """Every delivered start was ended, except after a refused non-blockable start (inv. 14, 15).

        Call only when no invalidation is in flight. Forgiven, and forgotten:
        starts of refused ranges (5.4 sends no end after a refusal), and starts
        on a subscription unlinked before the end walked the list (its last put
        or mm teardown came in between: the end's walk no longer sees it, in
        the kernel as here, and the driver dropped its translations before the
        put or in release anyway).
        """
        found: list[Violation] = []
        with self._lock:
            for rec in self.records.values():
                gone = is_freed(rec.sub) or not rec.sub.linked
                for key, range in list(rec.open_ranges.items()):
                    state = self._ranges.get(key)
                    del rec.open_ranges[key]
                    if state is not None:
                        state.open -= 1
                    if gone or (state is not None and state.refused):
                        continue
                    found.append(
                        Violation(PAIRING, f"{_describe(rec.sub)} received invalidate_range_start for {range!r} "
                                           f"but never its end")
                    )
            self._ranges = {key: state for key, state in self._ranges.items() if state.open > 0}
        return found

    def check_frees(self, settled: bool = False) -> list[Violation]:
        """No subscription freed behind the core's back; with ``settled`` (after synchronize), every
        unlinked subscription without users was freed (inv. 2, 12)."""
        found: list[Violation] = []
        with self._lock:
            for rec in self.records.values():
                sub = rec.sub
                if is_freed(sub):
                    if rec.frees == 0 and rec.allocated:
                        found.append(Violation(
                            ALLOC_FREE,
                            f"{sub!r} (driver {rec.driver}, mm {rec.mm_id}) was freed without free_notifier: the "
                            f"driver freed its own subscription instead of leaving it to the free after put",
                        ))
                    continue
                if settled and rec.allocated and sub.mm is not None and not sub.linked and sub.users == 0:
                    found.append(Violation(
                        ALLOC_FREE,
                        f"{_describe(sub)} had its last put but was not freed after synchronize (inv. 12)",
                    ))
        return found

    def check_leaks(self, held: Iterable[MMUNotifier] = ()) -> list[Violation]:
        """Every allocated subscription not in ``held`` was freed; call after synchronize."""
        keep = {id(s) for s in held}
        found: list[Violation] = []
        with self._lock:
            for rec in self.records.values():
                sub = rec.sub
                if not rec.allocated or is_freed(sub) or id(sub) in keep:
                    continue
                found.append(Violation(
                    LEAK,
                    f"{_describe(sub)} (users={sub.users}, linked={sub.linked}) is still allocated though no "
                    f"attach holds it and synchronize ran: a get without its put?",
                ))
        return found

    def take_ended(self) -> list[tuple[int, int, int, str]]:
        """The invalidations that ended since the last call (for coherence messages), and forget them."""
        with self._lock:
            ended, self.ended = self.ended, []
        return ended

    def subscriptions(self, driver: str | None = None, mm: MM | None = None) -> list[SubscriptionRecord]:
        """Records of subscriptions, optionally of one driver and/or one mm."""
        with self._lock:
            recs = list(self.records.values())
        return [
            r for r in recs
            if (driver is None or r.driver == driver) and (mm is None or r.mm_id == mm.id)
        ]


# -- structural checks ---------------------------------------------------------


def check_kernel(kernel: Kernel) -> list[Violation]:
    """The kernel logged no WARN and no deferred callback raised."""
    found = [Violation(KERNEL, f"kernel WARN: {w}") for w in kernel.warnings]
    found += [
        Violation(KERNEL, f"a deferred callback (free_notifier) raised {type(e).__name__}: {e}") for e in kernel.bugs
    ]
    return found


def check_registration(
    mm: MM, ops: MMUNotifierOps, held: Sequence[MMUNotifier], *, by_exit: bool = False
) -> list[Violation]:
    """One linked subscription of ``ops`` on ``mm``, shared by every attach in ``held`` (inv. 1).

    ``held`` lists the subscription of each attach still held on ``mm``. For
    a get/put driver each attach holds exactly one user and the last detach
    unlinks; with ``by_exit`` (:data:`mmu_notifier.exerciser.DETACH_BY_EXIT`)
    the one reference lives until the mm exits, whatever the attaches do.
    """
    found: list[Violation] = []
    container = mm.mmu_notifier_mm
    linked = [s for s in (container.subscriptions if container else ()) if s.ops is ops and s.linked]
    if len(linked) > 1:
        found.append(Violation(REGISTRATION, f"mm {mm.id} has {len(linked)} linked subscriptions of driver "
                                             f"{ops.name}; get/put keeps one per (driver, mm)"))
    if not mm.alive:
        if linked:
            found.append(Violation(REGISTRATION, f"mm {mm.id} exited but driver {ops.name} is still linked on it"))
        return found
    distinct = {id(s): s for s in held}
    if len(distinct) > 1:
        found.append(Violation(REGISTRATION, f"{len(held)} attaches on mm {mm.id} hold {len(distinct)} different "
                                             f"subscriptions of driver {ops.name}; they must share one"))
    if not held:
        if linked and not by_exit:
            found.append(Violation(
                REGISTRATION,
                f"driver {ops.name} is still linked on mm {mm.id} ({_describe(linked[0])}, users={linked[0].users}) "
                f"though every attach was detached: a get without its put?",
            ))
        return found
    sub = held[0]
    if is_freed(sub):
        found.append(Violation(ALLOC_FREE, f"an attach on mm {mm.id} holds {sub!r}, which was freed"))
        return found
    if not sub.linked or (container is not None and container.find(ops) is not sub):
        found.append(Violation(REGISTRATION, f"the subscription held by the attaches on mm {mm.id} "
                                             f"({_describe(sub)}) is not the one linked there"))
    if not by_exit and sub.users != len(held):
        found.append(Violation(REGISTRATION, f"{_describe(sub)} has users={sub.users} but {len(held)} attach(es) "
                                             f"hold it: each attach must take exactly one reference (get) and each "
                                             f"detach drop one (put)"))
    return found


def check_coherence(
    mm: MM, translations: Mapping[int, int], ended: Sequence[tuple[int, int, int, str]] = (), driver: str = "device"
) -> list[Violation]:
    """No device translation of ``mm`` names a frame the CPU page table does not map there.

    ``translations`` maps virtual page numbers to frames. Call when no
    invalidation is in flight: then every CPU change was announced and has
    ended, so any mismatch is a translation an invalidation should have
    dropped. ``ended`` (from :meth:`Recorder.take_ended`) names the
    invalidation responsible in the message.
    """
    found: list[Violation] = []
    entries = mm.page_table.entries
    shift = mm.page_shift
    for vpn, pfn in sorted(translations.items()):
        pte = entries.get(vpn)
        if pte is not None and pte.pfn == pfn:
            continue
        addr = vpn << shift
        cpu = f"maps frame {pte.pfn}" if pte is not None else "maps nothing"
        cause = [f"{event} {start:#x}-{end:#x}" for mm_id, start, end, event in ended
                 if mm_id == mm.id and start <= addr < end]
        after = f"after the invalidation(s) {', '.join(cause[-3:])} ended, " if cause else ""
        found.append(Violation(
            COHERENCE,
            f"{after}{driver} still translates {addr:#x} of mm {mm.id} to frame {pfn}, but the CPU page table "
            f"{cpu} there: a stale translation",
        ))
    return found


def check_exit_coherence(mm: MM, translations: Mapping[int, int], driver: str = "device") -> list[Violation]:
    """After ``mm`` exited, the device translates nothing of it."""
    if not translations:
        return []
    shown = ", ".join(f"{vpn << mm.page_shift:#x}->{pfn}" for vpn, pfn in sorted(translations.items())[:4])
    more = f" (+{len(translations) - 4} more)" if len(translations) > 4 else ""
    return [Violation(EXIT_COHERENCE, f"mm {mm.id} exited but {driver} still holds {len(translations)} "
                                      f"translation(s) of it: {shown}{more}")]


# -- the monitor ----------------------------------------------------------------


def _references(ex: Exerciser, handle: Handle) -> int:
    """The users ``handle`` holds: ``ex.references(handle)`` if the exerciser has it, else 1."""
    references = getattr(ex, "references", None)
    return 1 if references is None else int(references(handle))


@dataclass(eq=False)
class _Tracked:
    mm: MM
    users: int
    count: int


class Monitor:
    """Every invariant of one kernel's run, driven through exercisers.

    Tell it about each address space before attaching to it
    (:meth:`track_mm`, which also remembers its reference counts) and about
    each attach and detach; then :meth:`check` returns every violation.
    """

    def __init__(self, kernel: Kernel, exercisers: Iterable[Exerciser] = ()) -> None:
        self.kernel = kernel
        self.recorder = Recorder().install(kernel)
        self.exercisers: dict[str, Exerciser] = {}
        self.handles: dict[str, list[Handle]] = {}
        self.mms: list[_Tracked] = []
        for ex in exercisers:
            self.watch(ex)

    def watch(self, ex: Exerciser) -> None:
        """Check the driver behind ``ex``."""
        self.exercisers[ex.driver] = ex
        self.handles.setdefault(ex.driver, [])

    def track_mm(self, mm: MM) -> MM:
        """Watch ``mm`` (before anything attaches to it); returns it."""
        if not any(t.mm is mm for t in self.mms):
            self.mms.append(_Tracked(mm, mm.mm_users.value, mm.mm_count.value))
        return mm

    def attached(self, driver: str, handle: Handle) -> Handle:
        """Record an attach; returns the handle."""
        self.track_mm(handle.mm)
        self.handles.setdefault(driver, []).append(handle)
        return handle

    def detached(self, driver: str, handle: Handle) -> None:
        """Record a detach."""
        self.handles[driver].remove(handle)

    def held(self, driver: str, mm: MM | None = None) -> list[Handle]:
        """Handles of ``driver`` still attached (on ``mm``)."""
        return [h for h in self.handles.get(driver, []) if mm is None or h.mm is mm]

    # -- the checks ----------------------------------------------------------------
    def check(self, settled: bool = False) -> list[Violation]:
        """Every invariant that holds at a quiescent point; ``settled``: synchronize just ran."""
        found = list(self.recorder.violations)
        found += check_kernel(self.kernel)
        found += self.recorder.check_pairing()
        found += self.recorder.check_frees(settled)
        ended = self.recorder.take_ended()
        for driver, ex in self.exercisers.items():
            found += self._check_driver(driver, ex, ended, settled)
        if settled:
            held = [h.subscription for hs in self.handles.values() for h in hs]
            for tracked in self.mms:  # a reference dropped only by exit is held by the live mm
                container = tracked.mm.mmu_notifier_mm
                if tracked.mm.alive and container is not None:
                    held += [s for s in container.subscriptions if s.ops.name in self._by_exit()]
            found += self.recorder.check_leaks(held)
            found += self._check_refcounts()
        return found

    def _check_driver(
        self, driver: str, ex: Exerciser, ended: list[tuple[int, int, int, str]], settled: bool
    ) -> list[Violation]:
        found: list[Violation] = []
        caps = ex.capabilities
        ops = self.kernel.drivers.ops_of(driver)
        by_exit = contract.DETACH_BY_EXIT in caps
        if contract.REFUSES_NONBLOCK not in caps:
            for name, range in self.recorder.refusals:
                if name == driver:
                    found.append(Violation(CAPABILITIES, f"driver {driver} refused the non-blockable {range!r} but "
                                                         f"does not declare the capability refuses_nonblock"))
        for tracked in self.mms:
            mm = tracked.mm
            held = self.held(driver, mm)
            subs = [sub for h in held for sub in [h.subscription] * _references(ex, h)]
            found += check_registration(mm, ops, subs, by_exit=by_exit)
            if contract.DEVICE_TRANSLATIONS not in caps:
                continue
            translations = ex.translations(mm)
            if mm.alive:
                found += check_coherence(mm, translations, ended, driver)
                if not held and not by_exit and translations:
                    found.append(Violation(
                        LEAK,
                        f"every attach of {driver} on mm {mm.id} was detached but the device still translates "
                        f"{len(translations)} page(s) of it: a driver must drop its translations before put",
                    ))
            elif contract.RELEASE in caps or not held:
                found += check_exit_coherence(mm, translations, driver)
        return found

    def _by_exit(self) -> set[str]:
        return {d for d, ex in self.exercisers.items() if contract.DETACH_BY_EXIT in ex.capabilities}

    def _check_refcounts(self) -> list[Violation]:
        found: list[Violation] = []
        for tracked in self.mms:
            mm = tracked.mm
            if any(self.held(driver, mm) for driver in self.handles):
                continue
            if mm.mmu_notifier_mm is not None and mm.mmu_notifier_mm.subscriptions:
                continue  # still linked: the registration check judges whether it may be
            if mm.alive:
                if mm.mm_users.value != tracked.users or mm.mm_count.value != tracked.count:
                    found.append(Violation(
                        LEAK,
                        f"mm {mm.id}: mm_users={mm.mm_users.value} mm_count={mm.mm_count.value} after every attach "
                        f"was detached and synchronize ran; they were {tracked.users} and {tracked.count} before "
                        f"(a pin taken with mmget/mmgrab was never dropped)",
                    ))
            elif not mm.freed:
                found.append(Violation(
                    LEAK,
                    f"mm {mm.id} exited, nothing is attached and synchronize ran, but its mm_struct was not freed: "
                    f"mm_count={mm.mm_count.value} (a registration or mmgrab pin was never dropped)",
                ))
        return found

