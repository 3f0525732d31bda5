"""Per-driver counters of a run, and the tracer plugin that fills them, isolates and watches drivers.

The tracer is a non-driver plugin that wraps every driver's callbacks once,
when the ops are resolved (the registry's ``wrap_callback`` protocol: a
closure per callback, not a pluggy generator wrapper per call); the runner
adds what only the user path sees (attaches and detaches, peak users, device
faults).

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
import itertools
import sys
import sysconfig
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from greenlet import getcurrent

from mmu_notifier.errors import KernelError
from mmu_notifier.interval import MMUIntervalNotifier
from mmu_notifier.notifier import MMUNotifier
from mmu_notifier.range import Event, Range

_EAGAIN = -errno.EAGAIN


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


@dataclass(slots=True)
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


#: a call in flight as the tracer keeps it (cheap to make on every callback): (driver, what, started, OS thread
#: ident, greenlet); :meth:`StatsTracer.overdue` turns the late ones into :class:`InFlight`
_Call = tuple[str, str, float, int, Any]

#: an event's name by member (``Enum.name`` is a property: a dict is cheaper on every invalidation)
_EVENT_NAMES = {event: event.name for event in Event}


class _Calling:
    """The context of :meth:`StatsTracer.calling` (a class, not a generator: it brackets every exerciser call)."""

    __slots__ = ("tracer", "driver", "what", "token")

    def __init__(self, tracer: StatsTracer, driver: str, what: str) -> None:
        self.tracer = tracer
        self.driver = driver
        self.what = what
        self.token = 0

    def __enter__(self) -> None:
        tracer = self.tracer
        token = self.token = next(tracer._tokens)
        tracer.in_flight[token] = (self.driver, self.what, tracer.clock, threading.get_ident(), getcurrent())

    def __exit__(self, *exc: object) -> None:
        self.tracer.in_flight.pop(self.token, None)


class StatsTracer:
    """Counts callbacks per driver; records driver faults; tracks calls in flight for the watchdog.

    The tracer wraps each driver's callbacks once, when the ops are resolved
    (:meth:`wrap_callback`, the registry's closure protocol; see
    :meth:`mmu_notifier.plugins.DriverRegistry.add_plugin`), innermost, around the
    driver's own function: a traced callback costs one closure call, a counter, and
    an entry in :attr:`in_flight` for the time it runs, not a generator per call.

    Deliberate coarseness: a call's start time is :attr:`clock`, which the
    supervisor advances each time it polls :meth:`overdue` (every 50 ms in
    :func:`mmu_notifier.workload.runner.run`), not a clock read per callback. A
    deadline is judged to within one poll.
    """

    def __init__(self, stats: dict[str, DriverStats]) -> None:
        self.stats = stats
        self.callbacks = 0
        self.faults: list[Fault] = []
        #: calls in flight by token (in call order): see :data:`_Call`
        self.in_flight: dict[int, _Call] = {}
        #: the time a call starting now is stamped with (advanced by :meth:`overdue`)
        self.clock = time.monotonic()
        #: the last (callbacks counted, newest call in flight) seen by :meth:`overdue`, and when it changed
        self._progress_mark: tuple[int, int] = (-1, -1)
        self._progress_at = self.clock
        self._tokens = itertools.count()
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

    def calling(self, driver: str, what: str) -> _Calling:
        """Register a call into ``driver`` (its exerciser, a check) while it runs (a context manager)."""
        return _Calling(self, driver, what)

    def overdue(self, deadline: float) -> InFlight | None:
        """The call that is stuck, if a call has been in flight for longer than ``deadline`` seconds.

        Advances :attr:`clock`. Blames the call that is running, not the ones waiting for it: of each
        model thread only its innermost call counts (a callback inside an exerciser's access); a model
        thread switched out by the deterministic scheduler is waiting (its greenlet has a saved frame); of
        the OS threads, one whose innermost frame outside the standard library is the model's own
        ``sync``/``srcu`` code waits on a model lock. The oldest remaining call is the hang.

        A late call is a hang only if the whole run made no progress (no callback counted, no call
        begun) for ``deadline`` seconds: in a long run a call may legitimately stay in flight longer
        than the deadline while it waits for its turn or a lock and the others go on (a deterministic
        run of 10,000 processes under load: a call that waited for minutes may be the one running
        at the poll), but a callback that never returns stops every other thread sooner or later
        (the deterministic run at once; real threads when they need what it holds or run out of
        work), and a world where nothing moves is stuck.
        """
        now = self.clock = time.monotonic()
        mark = (self.callbacks, next(reversed(self.in_flight), -1))
        if mark != self._progress_mark:
            self._progress_mark, self._progress_at = mark, now
        if now - self._progress_at <= deadline:
            return None
        late = [(token, call) for token, call in list(self.in_flight.items()) if now - call[2] > deadline]
        if not late:
            return None
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        innermost: dict[int, InFlight] = {}
        for token, (driver, what, started, ident, glet) in late:
            key = id(glet)
            if key not in innermost or token > innermost[key].token:
                innermost[key] = InFlight(driver, what, names.get(ident, str(ident)), started, ident, glet, token)
        calls = sorted(innermost.values(), key=lambda call: call.started)
        running = [call for call in calls if getattr(call.glet, "gr_frame", None) is None]
        frames = sys._current_frames()
        stuck = [call for call in running if not _waits_in_model(frames.get(call.ident))]
        return (stuck or running or calls)[0]

    # -- the callbacks -------------------------------------------------------
    def wrap_callback(self, driver: str, callback: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` (``driver``'s ``callback``) counted, registered in flight, its exception a fault.

        Called by the registry when it resolves the ops (see the class docstring). ``alloc_notifier`` is
        left as it is (its exception fails the ``get``, and the process step records it); an interval
        notifier's ``invalidate`` is counted only (a ``False`` is a refusal).
        """
        stats = self.stats.get(driver)
        if callback == "alloc_notifier":
            return function
        if callback == "invalidate":
            return self._counted_interval(stats, function)
        guarded = self._guarded(driver, callback, function)
        if stats is None:
            return guarded
        if callback == "invalidate_range_start":
            invalidations = stats.invalidations

            def start(subscription: MMUNotifier, range: Range) -> Any:
                result = guarded(subscription, range)
                invalidations[_EVENT_NAMES[range.event]] += 1
                if result == _EAGAIN:
                    stats.refusals += 1
                return result

            return start
        if callback == "release":

            def release(*args: Any) -> Any:
                stats.releases += 1
                return guarded(*args)

            return release
        if callback == "free_notifier":

            def free_notifier(*args: Any) -> Any:
                stats.freed += 1  # counted before the object is freed
                return guarded(*args)

            return free_notifier
        return guarded

    def _guarded(self, driver: str, callback: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """The body of every traced callback: count, register in flight, turn an exception into a fault."""
        tracer = self
        in_flight = self.in_flight
        tokens = self._tokens
        get_ident = threading.get_ident

        def guarded(*args: Any) -> Any:
            tracer.callbacks += 1
            token = next(tokens)
            in_flight[token] = (driver, callback, tracer.clock, get_ident(), getcurrent())
            try:
                return function(*args)
            except KernelError:
                raise
            except Exception as error:
                tracer.fault(driver, callback, error)
                return None
            finally:
                in_flight.pop(token, None)

        return guarded

    def _counted_interval(self, stats: DriverStats | None, function: Callable[..., Any]) -> Callable[..., Any]:
        """An interval notifier's ``invalidate`` (5.5): counted as an invalidation; ``False`` is a refusal."""
        tracer = self

        def invalidate(subscription: MMUIntervalNotifier, range: Range, cur_seq: int) -> Any:
            result = function(subscription, range, cur_seq)
            tracer.callbacks += 1
            if stats is not None:
                stats.invalidations[_EVENT_NAMES[range.event]] += 1
                if result is False:
                    stats.refusals += 1
            return result

        return invalidate
