"""Per-driver counters of a run, and the tracer plugin that fills them, isolates and watches drivers.

The tracer is a non-driver plugin. For the hot per-subscription callbacks of
the list walks (``invalidate_range_start``/``_end``, ``invalidate_range``) it is
a *dispatch observer* of the registry (``dispatch_counts`` and ``callback_fault``,
see :meth:`mmu_notifier.plugins.DriverRegistry.add_plugin`): the core's walks
count those calls into each driver's
:class:`~mmu_notifier.plugins.CallbackCounts` and route a driver's exception
here, with no wrapper between the walk and the driver's function. Every other
callback it wraps once, when the ops are resolved (the registry's
``wrap_callback`` protocol: a closure per callback, not a pluggy generator
wrapper per call). The runner adds what only the user path sees (attaches and
detaches, peak users, device faults).

The tracer is also the run's guard against a faulty driver, in the way a
kernel oops in a module is that module's bug and nobody else's:

* a callback that raises is recorded as a fault of the driver that owns the
  subscription (with its traceback), and the core carries on as if the
  callback had returned nothing, so the invalidation, teardown and frees of
  every other driver stay exact (an ``alloc_notifier`` that raises fails its
  ``get`` with nothing registered, as the hook says; the process step that
  called it records the fault, see :mod:`mmu_notifier.workload.steps`);
* a watchdog (:meth:`StatsTracer.overdue`) names a callback that never
  returns: it samples, when it polls, the frames of the OS threads and (when
  the run has stopped moving) of the model threads' greenlets, and finds the
  innermost frame of a driver's callback by its code object; the exerciser
  calls the runner makes (:meth:`StatsTracer.calling`) are registered while
  they run.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

from greenlet import getcurrent

from mmu_notifier.errors import KernelError
from mmu_notifier.interval import MMUIntervalNotifier
from mmu_notifier.notifier import MMUNotifier
from mmu_notifier.plugins import DISPATCH_OBSERVED, CallbackCounts
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


#: an event's name by value (a list: the core's dispatch counts are per event value)
_EVENT_BY_VALUE = [event.name for event in sorted(Event)]


class _Invalidations(Counter[str]):
    """What :attr:`DriverStats.invalidations` returns with dispatch counts: the sum, where an addition is kept
    (it goes to the driver's own counter, as an addition to the plain counter did)."""

    own: Counter[str]

    def __setitem__(self, key: str, value: int) -> None:
        self.own[key] += value - self.get(key, 0)
        super().__setitem__(key, value)

    def __repr__(self) -> str:
        return repr(Counter(self))


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
    #: invalidations counted here (interval notifiers' ``invalidate``, and any added to a total); the list
    #: starts the core counts are added by :attr:`invalidations`
    own_invalidations: Counter[str] = field(default_factory=Counter)
    own_refusals: int = 0
    releases: int = 0
    device_faults: int = 0
    retries: int = 0
    violations: list[str] = field(default_factory=list)
    #: the tracebacks of the driver's faults (exceptions of its callbacks or its exerciser)
    tracebacks: list[str] = field(default_factory=list)
    #: violations of checks the driver declares as known kernel behaviour (``known_kernel_violations``)
    known: list[str] = field(default_factory=list)
    #: the core's dispatch counts of this driver with their ``starts`` and ``refusals`` when the tracer took
    #: them (see :meth:`StatsTracer.dispatch_counts`)
    dispatch: list[tuple[CallbackCounts, tuple[int, ...], int]] = field(
        default_factory=list, repr=False, compare=False)

    @property
    def invalidations(self) -> Counter[str]:
        """Invalidations delivered to the driver, by event name: list starts that returned, interval invalidates.

        Without dispatch counts (a total being summed) this is the counter itself; with them, a new counter
        each read (the core's counts move on their own) that keeps what is added to it, as the counter did.
        """
        if not self.dispatch:
            return self.own_invalidations
        merged: dict[str, int] = dict(self.own_invalidations)
        for counts, starts, _ in self.dispatch:
            for value, (now, then) in enumerate(zip(counts.starts, starts, strict=True)):
                if now != then:
                    name = _EVENT_BY_VALUE[value]
                    merged[name] = merged.get(name, 0) + now - then
        view = _Invalidations()
        view.own = self.own_invalidations
        dict.update(view, merged)
        return view

    @invalidations.setter
    def invalidations(self, value: Counter[str]) -> None:
        """Set the counts read back from now on (the core's counts so far are taken out of the tracer's own)."""
        own = Counter(value)
        for name, count in self.invalidations.items():
            own[name] -= count - self.own_invalidations.get(name, 0)
        self.own_invalidations = own

    @property
    def refusals(self) -> int:
        """Starts (list or interval) the driver refused: ``-EAGAIN`` or an interval ``False``."""
        return self.own_refusals + sum(counts.refusals - then for counts, _, then in self.dispatch)

    @refusals.setter
    def refusals(self, value: int) -> None:
        self.own_refusals += value - self.refusals

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


#: an exerciser call in flight as the tracer keeps it (cheap to make on every call): (driver, what, started, OS
#: thread ident, greenlet); :meth:`StatsTracer.overdue` turns the late ones into :class:`InFlight`
_Call = tuple[str, str, float, int, Any]

#: an event's name by member (``Enum.name`` is a property: a dict is cheaper on every invalidation)
_EVENT_NAMES = {event: event.name for event in Event}

#: the core's dispatch code: frames of it at the head of a fault's traceback are left out (the fault is the driver's)
_DISPATCH_FILES = ("mmu_notifier/notifier.py", "mmu_notifier/plugins.py", "mmu_notifier/workload/stats.py")


def _core_code(code: CodeType) -> bool:
    """``code`` is the core's own (a dispatch wrapper or adapter), not a driver's."""
    return "/mmu_notifier/" in code.co_filename.replace("\\", "/")


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
    """Counts callbacks per driver; records driver faults; finds a call that never returns, for the watchdog.

    A dispatch observer of the registry for the list walks' callbacks
    (:meth:`dispatch_counts`, :meth:`callback_fault`): the core counts them and
    isolates the driver's exception, so a traced walk costs what an untraced one
    does, plus a ``try``. Every other callback is wrapped once, when the ops are
    resolved (:meth:`wrap_callback`): a closure that counts and isolates.

    The watchdog (:meth:`overdue`) keeps no entry per callback: it samples the
    frames of the OS threads each time it polls (every 50 ms in
    :func:`mmu_notifier.workload.runner.run`), and the model threads' greenlets
    once the run stopped moving, and finds each one's innermost driver callback
    by its code object (learnt in :meth:`wrap_callback`, which sees every
    driver's every callback). Deliberate coarseness: a callback's start time is
    the poll that first saw its frame, so a deadline is judged to within one
    poll; an exerciser call (:meth:`calling`) is stamped with :attr:`clock`, the
    time of the last poll.
    """

    def __init__(self, stats: dict[str, DriverStats]) -> None:
        self.stats = stats
        #: callbacks the tracer's own wrappers counted (the core counts the list walks' ones, see :attr:`callbacks`)
        self._callbacks = 0
        #: the core's dispatch counts by identity, with their ``calls`` when the tracer took them
        self._dispatch: dict[int, tuple[CallbackCounts, int]] = {}
        self.faults: list[Fault] = []
        #: exerciser calls in flight by token (in call order): see :data:`_Call`
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
        #: every driver callback's code: code object -> {id(driver object), or 0: (driver name, callback)}
        self._code: dict[CodeType, dict[int, tuple[str, str]]] = {}
        #: frames of driver callbacks running on an OS thread, with the poll that first saw each (every poll)
        self._running_since: dict[FrameType, float] = {}
        #: the same for the model threads' parked greenlets (sampled only once the run stopped moving)
        self._parked_since: dict[FrameType, float] = {}
        #: the run's model threads as (name, greenlet); None: those of the deterministic backend in force, if any
        self.greenlets: Callable[[], Iterable[tuple[str, Any]]] | None = None

    @property
    def callbacks(self) -> int:
        """Driver callbacks begun: the tracer's wrapped ones and the list walks' ones the core counted."""
        total = self._callbacks
        for counts, then in list(self._dispatch.values()):
            total += counts.calls - then
        return total

    @callbacks.setter
    def callbacks(self, value: int) -> None:
        self._callbacks += value - self.callbacks

    # -- the registry's dispatch-observer protocol ----------------------------
    def dispatch_counts(self, driver: str, counts: CallbackCounts) -> None:
        """The core counts ``driver``'s list-walk callbacks into ``counts`` (called at every resolution of the
        ops, with the same object while the driver is loaded): taken once, with its values now as the baseline."""
        if id(counts) in self._dispatch:
            return
        self._dispatch[id(counts)] = (counts, counts.calls)
        stats = self.stats.get(driver)
        if stats is not None:
            stats.dispatch.append((counts, tuple(counts.starts), counts.refusals))

    def callback_fault(self, driver: str, callback: str, error: Exception) -> None:
        """A list walk caught ``driver``'s ``callback`` raising ``error``: that driver's fault (the walk goes on)."""
        self.fault(driver, callback, error)

    # -- faults and the watchdog -------------------------------------------
    def fault(self, driver: str, where: str, error: BaseException) -> Fault:
        """Record that ``driver``'s ``where`` raised ``error``: a violation of that driver, with its traceback.

        The traceback leaves out pluggy's frames and the core's dispatch frames it starts with (the walk or
        wrapper that caught it): it begins where the driver was called.
        """
        for known in self.faults:
            if known.error is error:
                return known
        frames = [frame for frame in traceback.extract_tb(error.__traceback__) if "/pluggy/" not in frame.filename]
        while len(frames) > 1 and frames[0].filename.replace("\\", "/").endswith(_DISPATCH_FILES):
            frames.pop(0)
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

        Advances :attr:`clock`, and samples the OS threads' frames (every poll: a callback's start is the
        poll that first saw its frame). Blames the call that is running, not the ones waiting for it: of
        each OS thread and each model thread only its innermost call counts (a callback inside an
        exerciser's access); a model thread switched out by the deterministic scheduler is waiting (its
        greenlet has a saved frame); of the OS threads, one whose innermost frame outside the standard
        library is the model's own ``sync``/``srcu`` code waits on a model lock. The oldest remaining call
        is the hang.

        A late call is a hang only if the whole run made no progress (no callback counted, no call begun,
        no new callback seen running) for ``deadline`` seconds: in a long run a call may legitimately stay
        in flight longer than the deadline while it waits for its turn or a lock and the others go on (a
        deterministic run of 10,000 processes under load: a call that waited for minutes may be the one
        running at the poll), but a callback that never returns stops every other thread sooner or later
        (the deterministic run at once; real threads when they need what it holds or run out of work),
        and a world where nothing moves is stuck. Only then are the parked model threads sampled too (a
        callback of one counts as begun no later than the run's last progress).
        """
        now = self.clock = time.monotonic()
        frames = sys._current_frames()
        before = self._running_since
        running = self._sample(frames.items(), before, now)
        self._running_since = {frame: since for frame, (since, _, _) in running.items()}
        mark = (self.callbacks, next(reversed(self.in_flight), -1))
        if mark != self._progress_mark or any(frame not in before for frame in running):
            self._progress_mark, self._progress_at = mark, now
        if now - self._progress_at <= deadline:
            self._parked_since.clear()
            return None
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        # the innermost call of each OS thread (its running greenlet) and of each parked model thread
        innermost: dict[tuple[str, int], InFlight] = {}
        for since, ident, (driver, callback) in running.values():
            innermost[("thread", ident)] = InFlight(driver, callback, names.get(ident, str(ident)), since, ident)
        glets = {id(glet): (name, glet) for name, glet in self._parked_greenlets()}
        parked = self._sample(((key, glet.gr_frame) for key, (_, glet) in glets.items()), self._parked_since, now)
        self._parked_since = {frame: since for frame, (since, _, _) in parked.items()}
        for since, key, (driver, callback) in parked.values():
            name, glet = glets[key]
            innermost[("greenlet", key)] = InFlight(driver, callback, name, min(since, self._progress_at), 0, glet)
        for token, (driver, what, started, ident, glet) in self.in_flight.copy().items():  # one C call: no switch
            place = ("thread", ident) if getattr(glet, "gr_frame", None) is None else ("greenlet", id(glet))
            known = innermost.get(place)
            if known is None or (known.token and token > known.token):
                innermost[place] = InFlight(driver, what, names.get(ident, str(ident)), started, ident, glet, token)
        late = sorted((call for call in innermost.values() if now - call.started > deadline),
                      key=lambda call: call.started)
        if not late:
            return None
        on_threads = [call for call in late if getattr(call.glet, "gr_frame", None) is None]
        stuck = [call for call in on_threads if not _waits_in_model(frames.get(call.ident))]
        return (stuck or on_threads or late)[0]

    def _sample(
        self, stacks: Iterable[tuple[int, FrameType | None]], since: dict[FrameType, float], now: float
    ) -> dict[FrameType, tuple[float, int, tuple[str, str]]]:
        """Of each ``(key, innermost frame)``, the innermost frame of a driver callback on that stack, with the
        time it was first seen (from ``since``, else ``now``), the key and (driver, callback)."""
        found: dict[FrameType, tuple[float, int, tuple[str, str]]] = {}
        code = self._code
        for key, top in stacks:
            frame = top
            while frame is not None:
                owners = code.get(frame.f_code)
                if owners is not None:
                    found[frame] = (since.get(frame, now), key, self._owner(frame, owners))
                    break
                frame = frame.f_back
        return found

    @staticmethod
    def _owner(frame: FrameType, owners: dict[int, tuple[str, str]]) -> tuple[str, str]:
        """Which driver's callback ``frame`` runs: by its ``self`` when drivers share the code (a base class's)."""
        if len(owners) > 1 and frame.f_code.co_argcount:
            found = owners.get(id(frame.f_locals.get(frame.f_code.co_varnames[0])))
            if found is not None:
                return found
        return next(iter(owners.values()))

    def _parked_greenlets(self) -> list[tuple[str, Any]]:
        """The model threads switched out (a greenlet with a saved frame), with their names."""
        if self.greenlets is not None:
            threads = list(self.greenlets())
        else:
            from mmu_notifier import sync
            from mmu_notifier.explore import Execution

            backend = sync.backend()
            threads = [(th.name, th.glet) for th in backend.live] if isinstance(backend, Execution) else []
        return [(name, glet) for name, glet in threads if getattr(glet, "gr_frame", None) is not None]

    # -- the callbacks -------------------------------------------------------
    def wrap_callback(self, driver: str, callback: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` (``driver``'s ``callback``) counted, its exception a fault; its code learnt for the watchdog.

        Called by the registry when it resolves the ops (see the class docstring). The list walks' callbacks
        (:data:`~mmu_notifier.plugins.DISPATCH_OBSERVED`) are returned as they are: the core counts and
        isolates them for this observer. ``alloc_notifier`` is left as it is too (its exception fails the
        ``get``, and the process step records it); an interval notifier's ``invalidate`` is counted only (a
        ``False`` is a refusal).
        """
        self._learn(driver, callback, function)
        stats = self.stats.get(driver)
        if callback == "alloc_notifier" or callback in DISPATCH_OBSERVED:
            return function
        if callback == "invalidate":
            return self._counted_interval(stats, function)
        guarded = self._guarded(driver, callback, function)
        if stats is None:
            return guarded
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

    def _learn(self, driver: str, callback: str, function: Callable[..., Any]) -> None:
        """Map the code of ``function``, and of each function it wraps (``__wrapped__``, as the registry's
        adapters and :func:`functools.wraps` set it), to ``(driver, callback)``; the core's own code is left out."""
        current: Any = function
        for _ in range(100):  # a __wrapped__ chain is short; a cycle must not hang the resolution
            code = getattr(getattr(current, "__func__", current), "__code__", None)
            if isinstance(code, CodeType) and not _core_code(code):
                owner = getattr(current, "__self__", None)
                self._code.setdefault(code, {})[0 if owner is None else id(owner)] = (driver, callback)
            current = getattr(current, "__wrapped__", None)
            if current is None:
                break

    def _guarded(self, driver: str, callback: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """The body of every wrapped callback: count, turn an exception into a fault."""
        tracer = self

        def guarded(*args: Any) -> Any:
            tracer._callbacks += 1
            try:
                return function(*args)
            except KernelError:
                raise
            except Exception as error:
                tracer.fault(driver, callback, error)
                return None

        return guarded

    def _counted_interval(self, stats: DriverStats | None, function: Callable[..., Any]) -> Callable[..., Any]:
        """An interval notifier's ``invalidate`` (5.5): counted as an invalidation; ``False`` is a refusal."""
        tracer = self

        def invalidate(subscription: MMUIntervalNotifier, range: Range, cur_seq: int) -> Any:
            result = function(subscription, range, cur_seq)
            tracer._callbacks += 1
            if stats is not None:
                stats.own_invalidations[_EVENT_NAMES[range.event]] += 1
                if result is False:
                    stats.own_refusals += 1
            return result

        return invalidate
