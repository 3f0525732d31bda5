"""Per-driver counters of a run, and the tracer plugin that fills them, isolates and watches drivers.

The tracer is a non-driver pluggy plugin whose wrappers see every driver's
callbacks (the core's wrapper mechanism); the runner adds what only the user
path sees (attaches and detaches, peak users, device faults).

The tracer is also the run's guard against a faulty driver, in the way a
kernel oops in a module is that module's bug and nobody else's:

* a callback that raises is recorded as a fault of the driver that owns the
  subscription (with its traceback), and the core carries on as if the
  callback had returned nothing, so the invalidation, teardown and frees of
  every other driver stay exact (an ``alloc_notifier`` that raises fails its
  ``get`` with nothing registered, as the hook says; the process step that
  called it records the fault, see :mod:`mmu_notifier.workload.steps`);
* every callback in flight is registered with its driver, name, thread and
  start time, so a watchdog can name a callback that never returns.
"""

from __future__ import annotations

import errno
import sys
import sysconfig
import threading
import time
import traceback
from collections import Counter
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from greenlet import getcurrent

from mmu_notifier.errors import KernelError
from mmu_notifier.hookspecs import hookimpl
from mmu_notifier.notifier import MMUNotifier
from mmu_notifier.range import Range


@dataclass
class Fault:
    """A driver's code raised: which driver, where, the exception and its traceback."""

    driver: str
    where: str
    error: BaseException
    traceback: str
    #: the greenlet (model thread, or OS thread's main greenlet) it happened on
    owner: object = None

    def describe(self) -> str:
        """One line: what raised and how."""
        text = str(self.error).strip().splitlines()
        return f"{self.where} raised {type(self.error).__name__}: {text[0] if text else ''}".rstrip(": ")


_STDLIB = sysconfig.get_paths()["stdlib"]


def _waits_in_model(frame: FrameType | None) -> bool:
    """The thread's innermost frame outside the standard library is the model's sync or SRCU code."""
    while frame is not None and frame.f_code.co_filename.startswith(_STDLIB):
        frame = frame.f_back
    if frame is None:
        return False
    name = frame.f_code.co_filename.replace("\\", "/")
    return name.endswith(("mmu_notifier/sync.py", "mmu_notifier/srcu.py"))


@dataclass
class DriverStats:
    """What one driver did during a run."""

    #: every subscription met through attach (kept alive, so identity stays unique)
    subscriptions: set[MMUNotifier] = field(default_factory=set)
    #: subscriptions the core received: ``alloc_notifier`` results and ones the driver registered itself
    #: (filled from the invariants recorder at the end of the run)
    allocated: int = 0
    #: ``free_notifier`` calls
    freed: int = 0
    #: opens (``attach``) and closes (``detach``) of the device through the exerciser
    attaches: int = 0
    detaches: int = 0
    peak_users: int = 0
    invalidations: Counter[str] = field(default_factory=Counter)
    refusals: int = 0
    releases: int = 0
    device_faults: int = 0
    retries: int = 0
    violations: list[str] = field(default_factory=list)
    #: the tracebacks of the driver's faults (exceptions of its callbacks or its exerciser)
    tracebacks: list[str] = field(default_factory=list)
    #: violations of checks the driver declares as known kernel behaviour (``known_kernel_violations``)
    known: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "allocated": self.allocated,
            "freed": self.freed,
            "attaches": self.attaches,
            "detaches": self.detaches,
            "peak_users": self.peak_users,
            "invalidations": dict(sorted(self.invalidations.items())),
            "nonblock_refusals": self.refusals,
            "releases": self.releases,
            "device_faults": self.device_faults,
            "retries": self.retries,
            "violations": list(self.violations),
            "tracebacks": list(self.tracebacks),
            "known_kernel_behaviour": list(self.known),
        }


@dataclass
class InFlight:
    """A driver call that has not returned yet (for the watchdog)."""

    driver: str
    what: str
    thread: str
    started: float
    #: the OS thread and the greenlet (model thread) making the call
    ident: int = 0
    glet: Any = None
    token: int = 0


class StatsTracer:
    """Counts callbacks per driver through pluggy wrappers; records driver faults; tracks calls in flight."""

    def __init__(self, stats: dict[str, DriverStats]) -> None:
        self.stats = stats
        self.callbacks = 0
        self.faults: list[Fault] = []
        self.in_flight: dict[int, InFlight] = {}
        self._tokens = iter(range(1 << 62))
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}
        self._repeats: Counter[tuple[str, str]] = Counter()

    # -- faults and the watchdog -------------------------------------------
    def fault(self, driver: str, where: str, error: BaseException) -> Fault:
        """Record that ``driver``'s ``where`` raised ``error``: a violation of that driver, with its traceback."""
        for known in self.faults:
            if known.error is error:
                return known
        frames = [frame for frame in traceback.extract_tb(error.__traceback__) if "/pluggy/" not in frame.filename]
        text = "".join(["Traceback (most recent call last):\n", *traceback.format_list(frames),
                        *traceback.format_exception_only(type(error), error)])
        found = Fault(driver, where, error, text, getcurrent())
        with self._lock:
            self.faults.append(found)
            stats = self.stats.get(driver)
            if stats is None:
                return found
            # the same fault again (same place, type and message): counted on its first line, traceback once
            key = (driver, found.describe())
            if key in self._seen:
                index = self._seen[key]
                self._repeats[key] += 1
                stats.violations[index] = f"driver fault: {found.describe()} ({self._repeats[key]} times)"
            else:
                self._seen[key] = len(stats.violations)
                self._repeats[key] = 1
                stats.violations.append(f"driver fault: {found.describe()}")
                stats.tracebacks.append(text)
        return found

    @contextmanager
    def calling(self, driver: str, what: str) -> Iterator[None]:
        """Register a call into ``driver`` (a callback or its exerciser) while it runs."""
        token = next(self._tokens)
        self.in_flight[token] = InFlight(driver, what, threading.current_thread().name, time.monotonic(),
                                         threading.get_ident(), getcurrent(), token)
        try:
            yield
        finally:
            self.in_flight.pop(token, None)

    def overdue(self, deadline: float) -> InFlight | None:
        """The call that is stuck, if a call has been in flight for longer than ``deadline`` seconds.

        Blames the call that is running, not the ones waiting for it: of each model thread only its
        innermost call counts (a callback inside an exerciser's access); a model thread switched out
        by the deterministic scheduler is waiting (its greenlet has a saved frame); of the OS threads,
        one whose innermost frame outside the standard library is the model's own ``sync``/``srcu``
        code waits on a model lock. The oldest remaining call is the hang.
        """
        now = time.monotonic()
        late = [call for call in list(self.in_flight.values()) if now - call.started > deadline]
        if not late:
            return None
        innermost: dict[int, InFlight] = {}
        for call in late:
            key = id(call.glet)
            if key not in innermost or call.token > innermost[key].token:
                innermost[key] = call
        calls = sorted(innermost.values(), key=lambda call: call.started)
        running = [call for call in calls if getattr(call.glet, "gr_frame", None) is None] or calls
        frames = sys._current_frames()
        stuck = [call for call in running if not _waits_in_model(frames.get(call.ident))]
        return (stuck or running)[0]

    def _guarded(self, subscription: MMUNotifier, callback: str) -> Generator[None, Any, Any]:
        """The body of every wrapper: count, register in flight, turn an exception into a fault."""
        name = subscription.ops.name
        self.callbacks += 1
        with self.calling(name, callback):
            try:
                return (yield)
            except KernelError:
                raise
            except Exception as error:
                self.fault(name, callback, error)
                return None

    # -- the wrappers ------------------------------------------------------
    @hookimpl(wrapper=True)
    def invalidate_range_start(self, subscription: MMUNotifier, range: Range) -> Generator[None, int, int]:
        stats = self.stats[subscription.ops.name]
        result = yield from self._guarded(subscription, "invalidate_range_start")
        stats.invalidations[range.event.name] += 1
        if result == -errno.EAGAIN:
            stats.refusals += 1
        return result  # type: ignore[no-any-return]

    @hookimpl(wrapper=True)
    def invalidate_range_end(self, subscription: MMUNotifier, range: Range) -> Generator[None, Any, Any]:
        return (yield from self._guarded(subscription, "invalidate_range_end"))

    @hookimpl(wrapper=True)
    def invalidate_range(self, subscription: MMUNotifier, mm: Any, start: int, end: int) -> Generator[None, Any, Any]:
        return (yield from self._guarded(subscription, "invalidate_range"))

    @hookimpl(wrapper=True)
    def clear_flush_young(self, subscription: MMUNotifier, mm: Any, start: int, end: int) -> Generator[None, Any, Any]:
        return (yield from self._guarded(subscription, "clear_flush_young"))

    @hookimpl(wrapper=True)
    def clear_young(self, subscription: MMUNotifier, mm: Any, start: int, end: int) -> Generator[None, Any, Any]:
        return (yield from self._guarded(subscription, "clear_young"))

    @hookimpl(wrapper=True)
    def test_young(self, subscription: MMUNotifier, mm: Any, address: int) -> Generator[None, Any, Any]:
        return (yield from self._guarded(subscription, "test_young"))

    @hookimpl(wrapper=True)
    def change_pte(self, subscription: MMUNotifier, mm: Any, address: int, pte: Any) -> Generator[None, Any, Any]:
        return (yield from self._guarded(subscription, "change_pte"))

    @hookimpl(wrapper=True)
    def release(self, subscription: MMUNotifier, mm: Any) -> Generator[None, None, None]:
        self.stats[subscription.ops.name].releases += 1
        yield from self._guarded(subscription, "release")

    @hookimpl(wrapper=True)
    def free_notifier(self, subscription: MMUNotifier) -> Generator[None, None, None]:
        self.stats[subscription.ops.name].freed += 1  # read the name before the object is freed
        yield from self._guarded(subscription, "free_notifier")
