"""The deterministic backend: model threads on greenlets, exactly one running at a time.

This is the explorer's replacement for real CPUs (the role loom's or shuttle's
runtime plays for Rust). Each model thread is a greenlet; it runs until it
reaches a scheduling point of :mod:`mmu_notifier.sync` (lock, unlock, wait,
wake, SRCU enter/leave, an atomic op, a list-walk element, ``yield_now``), where
:meth:`Execution.point` asks the *chooser* (a strategy) which thread performs
the next step. Nested model code needs no change: the greenlet's whole stack is
suspended wherever the primitive was called.

A *step* is "thread T performs its pending operation (op, resource) and runs
on to its next scheduling point". The list of steps is the execution's trace;
its thread indices are the schedule. When the chosen thread is the one
already running, nothing switches, so an uncontended step costs a few hundred
nanoseconds; a context switch is one direct greenlet switch between the two
model threads (the hub is only involved at start, at thread exit and at the end).

Blocking follows the kernel's wait-queue discipline: a waiter sleeps until
``wake(resource)`` marks it woken; it becomes runnable only if its condition
then holds, otherwise it sleeps again. A waiter whose condition holds but that
nobody woke is a lost wake-up, reported with the deadlock. Timed waits expire
only when no other thread can run (virtual time stands still while any thread
has work), which keeps them deterministic.

For the partial-order reduction (:mod:`._dpor`) an execution can also *record*
what every step did, as raw facts the reduction interprets: the step's label,
the wait checks that passed or blocked, the wakes, the state changes without a
point (``Backend.touch``), the op of the point the step ended at (a release
op's effect belongs to the step that ends there), thread spawns, whether the
thread held a lock. Primitives are named by who created them
(``Backend.created``), so the names agree across executions. Two more modes
serve the reduction: with ``retry_steps`` a woken waiter becomes runnable
whatever its condition, and its retry is a step of its own (a *failed retry*
when the condition does not hold: it sleeps again), so no step ever disables
another; with ``lazy_waits`` a thread whose next step would only go to sleep on
a mutex, a spinlock, the read side of an rw-semaphore or a completion (a wait
that changes nothing) is not offered until it can get through, so such waits
are no steps at all; with ``run_past_failures`` a thread that fails is retired and the
others run on, so every execution is maximal.

The run ends when every non-daemon thread (and the scenario's finale) has
finished, when no thread can run (deadlock), when a thread raised, when the
chooser gives up (a pruned or diverging schedule) or at the step bound (the
livelock guard). Threads left suspended are unwound by throwing
:class:`Abandon` into them, so their ``finally`` blocks run while this backend
is still installed.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import signal
import sys
import threading
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Protocol, cast

from greenlet import getcurrent, greenlet

from mmu_notifier import sync
from mmu_notifier.explore import _findings as findings
from mmu_notifier.explore._describe import describe
from mmu_notifier.explore._findings import Kind, Problem
from mmu_notifier.explore._lockdep import ACQUIRE_OPS, LockOrder
from mmu_notifier.explore._scenario import Scenario

# Thread states.
RUN, BLOCKED, WOKEN, DONE = 0, 1, 2, 3

# Execution statuses (empty while running).
FINISHED = "finished"
FAILED = "failed"
STEP_BOUND = "step-bound"
ABORTED = "aborted"


#: a trace step's thread index (C-level: the schedule of every execution is read this way)
_THREAD_OF_STEP = operator.itemgetter(0)


#: a thread's index as a C-level key (sorts and bisections of herds of threads call it for each)
_IDX = attrgetter("idx")

#: waits whose condition reads only the resource waited on: every waiter of it shares the answer
_SHARED_WAITS = frozenset({"mutex_lock", "spin_lock", "down_read", "down_write", "wait_for_completion"})

#: waits whose condition, once it holds, holds until the waiter runs (nothing but the waiter can undo it:
#: SRCU's grace periods end for good and its callback count only grows): a waiter of one woken with its
#: condition holding is runnable at once (see ``Execution._run_settled``)
_MONOTONE_WAITS = frozenset({"synchronize_srcu", "srcu_gp", "srcu_barrier"})


def _merged_at(runnable: list[ModelThread], ready: list[ModelThread], k: int) -> ModelThread:
    """The ``k``-th thread of the index-ordered merge of ``runnable`` and ``ready`` (both in index order).

    Without building the merge: ``ready[j]`` sits at ``j + bisect_left(runnable, ready[j])`` in it, which
    grows with ``j``, so a binary search over ``j`` finds the first ready thread at or after ``k``
    (O(log^2) whatever the herd of woken threads).
    """
    lo, hi = 0, len(ready)
    while lo < hi:
        mid = (lo + hi) // 2
        if mid + bisect_left(runnable, ready[mid].idx, key=_IDX) >= k:
            hi = mid
        else:
            lo = mid + 1
    if lo < len(ready) and lo + bisect_left(runnable, ready[lo].idx, key=_IDX) == k:
        return ready[lo]
    return runnable[k - lo]


def _kth_of(lists: list[list[ModelThread]], k: int) -> ModelThread:
    """The ``k``-th thread of the index-ordered merge of ``lists`` (each in index order, no thread twice).

    A binary search over thread indices (how many threads of all lists are at or below an index is a
    sum of C-level bisections): O(log(indices) * lists * log(length)), whatever the herds' sizes.
    """
    lo, hi = 0, max(threads[-1].idx for threads in lists)
    while lo < hi:
        mid = (lo + hi) // 2
        if sum(bisect_right(threads, mid, key=_IDX) for threads in lists) > k:
            hi = mid
        else:
            lo = mid + 1
    for threads in lists:
        at = bisect_left(threads, lo, key=_IDX)
        if at < len(threads) and threads[at].idx == lo:
            return threads[at]
    raise AssertionError("unreachable: the k-th thread is in one of the lists")


def _remove(threads: list[ModelThread], th: ModelThread) -> None:
    """Remove ``th`` from a list kept in index order: a binary search, not a scan."""
    del threads[bisect_left(threads, th.idx, key=_IDX)]


class _CountingTrace(list[tuple[int, str, object]]):
    """A trace that keeps only its length and last step: a long run's memory stays flat.

    Used when an execution is not recorded (the main job without a timeline);
    everything that reads ``len(trace)`` or ``trace[-1]`` works unchanged.
    """

    __slots__ = ("_steps", "_last")

    def __init__(self) -> None:
        super().__init__()
        self._steps = 0
        self._last: tuple[int, str, object] | None = None

    def append(self, step: tuple[int, str, object]) -> None:
        self._steps += 1
        self._last = step

    def __len__(self) -> int:
        return self._steps

    def __bool__(self) -> bool:
        return self._steps > 0

    def __getitem__(self, index: Any) -> Any:
        if index == -1 and self._last is not None:
            return self._last
        raise IndexError("an unrecorded execution keeps only its last step")


class Abandon(BaseException):
    """Thrown into a suspended model thread to unwind it after the run ended."""


class ModelThread:
    """One model thread: its task (``current``), greenlet, state and pending step.

    ``op``/``res`` describe the step the thread will perform when next chosen;
    ``ready`` is the wait condition of a blocked thread.
    """

    __slots__ = (
        "idx",
        "name",
        "base",
        "daemon",
        "task",
        "fn",
        "glet",
        "state",
        "op",
        "res",
        "ready",
        "timeout",
        "timed_out",
        "last",
        "blocked_at",
        "parents",
        "chan",
    )

    def __init__(self, idx: int, name: str, daemon: bool, base: str = "") -> None:
        self.idx = idx
        self.name = name
        #: the name it was spawned with (``name`` may add ``#idx`` to tell apart threads of one name)
        self.base = base or name
        self.daemon = daemon
        self.task = sync.Task(name)
        #: the thread's function (run by a pooled worker greenlet once the thread is started)
        self.fn: Callable[[], object] | None = None
        #: the worker greenlet running it (None: not started yet)
        self.glet: Any = None
        self.state = RUN
        self.op = "start"
        self.res: object = None
        self.ready: Callable[[], bool] | None = None
        self.timeout = False
        self.timed_out = False
        #: index of the thread's latest step (-1: none yet)
        self.last = -1
        #: index of the step in which the thread went to sleep (-1: it did not)
        self.blocked_at = -1
        #: steps its creation waited for (the spawning step; for the finale every thread's last step)
        self.parents: tuple[int, ...] = ()
        #: ``id`` of what a wake must name to wake it while it waits (its resource, or the wait's channel)
        self.chan = 0

    def __repr__(self) -> str:
        return f"<ModelThread {self.idx} {self.name} {self.op} {describe(self.res)}>"


class Chooser(Protocol):
    """What a strategy provides to the scheduler.

    ``choose`` picks one of ``cands`` (runnable threads in index order);
    ``current`` is the thread that reached the point, or ``None`` if it
    blocked or finished. Returning ``None`` abandons the execution. The
    scheduler consults the chooser only when two or more threads can run,
    unless ``always`` is true (replay checks every step).
    """

    always: bool

    # Optionally ``pick(n) -> int``: a chooser whose choice is an index among ``n``
    # candidates drawn independently of them (the random walk) offers it, and the
    # scheduler then finds that candidate without building the candidate list.

    def choose(
        self, cands: list[ModelThread], current: ModelThread | None, ex: Execution
    ) -> ModelThread | None:
        """The thread that performs the next step."""
        ...


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened during a step besides its scheduling point: an allocation or a free.

    ``step`` is the index of the step during which it happened (``None``:
    while the scenario was being built, before the first step).
    """

    step: int | None
    thread: str
    what: str
    label: str


class StepRecord:
    """What one step did, as raw facts for the partial-order reduction (see :mod:`._dpor`).

    ``facts`` are ``(kind, op, key)`` with kind ``label`` (the op the step
    started with), ``check`` (a wait that found its condition true), ``block``
    (a wait that went to sleep), ``wake``, ``touch`` (a change without a
    point), ``end`` (the op of the point the step ended at) and ``spawn``;
    ``key`` names the resource the same way in every execution.
    """

    __slots__ = ("facts", "locked", "retry_of", "failed", "timeout", "parents", "before")

    def __init__(self, facts: list[tuple[str, str, object]], locked: bool, retry_of: int, parents: tuple[int, ...]):
        self.facts = facts
        #: the thread held a lock when the step started
        self.locked = locked
        #: a waiter's retry: the index of the step in which it went to sleep (-1 otherwise)
        self.retry_of = retry_of
        #: a retry whose condition did not hold (the thread slept again)
        self.failed = False
        #: a timed wait that expired because no thread could run
        self.timeout = False
        self.parents = parents
        #: ``lazy_waits``: for each lock, rw-semaphore and completion seen so far, whether a wait on it
        #: would get through when the step starts (lock free, read side open, completion done)
        self.before: dict[object, bool] = {}

    def __repr__(self) -> str:
        return f"<StepRecord {self.facts} retry_of={self.retry_of} failed={self.failed}>"


@dataclass(slots=True)
class Outcome:
    """What one execution did and found."""

    status: str
    trace: list[tuple[int, str, object]]
    threads: list[ModelThread]
    #: names of the scenario's own threads (what its fingerprint covers)
    declared: tuple[str, ...]
    #: switches away from a thread that could have gone on
    preemptions: int
    problem: Problem | None
    predicted: Problem | None
    #: allocations and frees, in order, for the timeline's marks
    events: tuple[Event, ...] = ()
    #: every real problem, in order (more than one only when the run went on past failures)
    problems: tuple[Problem, ...] = ()
    #: per step, what it did (only when the chooser asked for records)
    records: list[StepRecord] | None = None

    @property
    def choices(self) -> tuple[int, ...]:
        """The schedule: the thread index of every step."""
        return tuple(map(_THREAD_OF_STEP, self.trace))


#: waits ``lazy_waits`` turns into "not offered until it can get through"
LAZY_WAITS = frozenset({"mutex_lock", "spin_lock", "down_read", "wait_for_completion"})


def passable(primitive: object) -> bool | None:
    """Whether a lazy wait on ``primitive`` would get through now (None: not such a primitive)."""
    kind = type(primitive)  # not isinstance: a freed (poisoned) object must not be touched
    if kind is sync.Mutex or kind is sync.SpinLock:
        return cast("sync.Mutex", primitive).owner is None
    if kind is sync.Completion:
        return cast("sync.Completion", primitive).done > 0
    if kind is sync.RWSemaphore:
        rwsem = cast("sync.RWSemaphore", primitive)
        return rwsem.writer is None and rwsem.writers_waiting == 0
    return None


_PASSABLE: dict[type, Callable[[Any], bool]] = {
    sync.Mutex: lambda lock: lock.owner is None,
    sync.SpinLock: lambda lock: lock.owner is None,
    sync.Completion: lambda done: done.done > 0,
    sync.RWSemaphore: lambda rwsem: rwsem.writer is None and rwsem.writers_waiting == 0,
}


def _pick_kind(kind: type) -> tuple[bool, bool]:
    """(its ``pick`` makes its choices, that ``pick`` is uniform) for a chooser class; decided once per class.

    A subclass that overrides ``choose`` but inherits ``pick`` (a test's "always switch" random walk)
    chooses otherwise: the first class of its MRO defining either must define ``pick``. That class's
    ``pick`` is uniform (``int(stream() * n)``) when its own body says ``uniform_pick``, as
    :class:`RandomWalk`'s does; a subclass with a ``pick`` of its own is asked.
    """
    known = _PICK_KINDS.get(kind)
    if known is None:
        known = (False, False)
        for klass in kind.__mro__:
            if "pick" in vars(klass):
                known = (True, bool(vars(klass).get("uniform_pick")))
                break
            if "choose" in vars(klass):
                break
        _PICK_KINDS[kind] = known
    return known


#: chooser class -> :func:`_pick_kind` (every execution asks)
_PICK_KINDS: dict[type, tuple[bool, bool]] = {}


def _pick_of(chooser: Chooser) -> Callable[[int], int] | None:
    """The chooser's ``pick``, if its choices are made by it (see :func:`_pick_kind`)."""
    pick: Callable[[int], int] | None = getattr(chooser, "pick", None)
    if pick is None or chooser.always or not _pick_kind(type(chooser))[0]:
        return None
    return pick


def _random_of(chooser: Chooser) -> Callable[[], float] | None:
    """The uniform stream a random walk's ``pick`` draws from, else None (see :func:`_pick_kind`)."""
    if not _pick_kind(type(chooser))[1]:
        return None
    return cast("Callable[[], float]", chooser.stream)  # type: ignore[attr-defined]


def _parked(th: ModelThread) -> bool:
    """``lazy_waits``: the thread's next step would only go to sleep."""
    return th.op in LAZY_WAITS and not passable(th.res)



def _work(ex: Execution, th: ModelThread) -> None:
    """The life of a worker greenlet: run model threads one after another, parked in between.

    Creating, starting and ending a greenlet costs about twenty switches, and
    every execution starts its threads afresh; a worker instead goes back to
    its parent (the hub) when its thread ends, exactly as an ended greenlet
    would (the hub receives ``None``), and waits there for the next thread,
    of this execution or a later one. It keeps nothing of the thread it ran:
    the references are dropped before it parks.
    """
    while True:
        ex._body(th)
        del ex, th
        ex, th = getcurrent().parent.switch(None)


#: the execution running on the main thread now (what Ctrl-C stops), if any
_running: Execution | None = None
_handler_installed = False


def _interrupt(signum: int, frame: Any) -> None:
    """SIGINT while the explorer runs: stop the running execution's scheduling, then ``KeyboardInterrupt``.

    A ``KeyboardInterrupt`` raised inside a model thread unwinds through the model's ``finally``
    blocks, which release locks: scheduling points. Had the execution gone on choosing there,
    another thread would run while the interrupt waited half-propagated, and the teardown's
    ``Abandon`` would replace it: the interrupt lost, and the search going on over a thread cut
    off mid-step (DPOR then sees a "nondeterministic" scenario). So the handler first marks the
    execution stopping: its points return at once and a wait raises ``KeyboardInterrupt`` again.
    """
    ex = _running
    if ex is not None:
        ex._stopping = True
        ex._interrupted = True
    raise KeyboardInterrupt


def _catch_interrupts() -> None:
    """Install :func:`_interrupt` for SIGINT once, on the main thread, over Python's default handler only."""
    global _handler_installed
    if _handler_installed:
        return
    if threading.current_thread() is not threading.main_thread():
        return
    _handler_installed = True
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)


#: parked workers kept for later executions (beyond this, ended executions' workers are dropped)
_POOL_SIZE = 256
_POOLS = threading.local()


def _pool() -> list[Any]:
    """This OS thread's parked workers (a greenlet runs only on the thread that made it)."""
    try:
        pool: list[Any] = _POOLS.parked
    except AttributeError:
        pool = _POOLS.parked = []
    return pool


def _is_parked(glet: Any) -> bool:
    """True when ``glet`` waits in :func:`_work` for its next thread (not dead, not inside a thread)."""
    frame = glet.gr_frame
    return frame is not None and frame.f_code is _work.__code__


class Execution(sync.Backend):
    """One execution of a scenario under a chooser: the explorer's :class:`sync.Backend`.

    ``lock_sites=False`` skips lockdep's acquisition bookkeeping (the stack and
    step of every lock taken, about a third of a step's cost in a long main-job
    run): the execution is the same step for step and finds the same problems,
    but a deadlock or lock-order report names no site where a held lock was
    taken. A caller that wants those sites re-runs the same schedule with them
    (what the main job does when a run deadlocks).
    """

    name = "explore"

    def __init__(
        self,
        scenario: Scenario,
        chooser: Chooser,
        max_steps: int | None = None,
        record: bool = True,
        lock_sites: bool = True,
    ) -> None:
        self.scenario = scenario
        #: keep where and at which step each lock was taken (for deadlock and lock-order reports); without it
        #: the run is the same, step for step, but those reports name no acquisition site (see ``lock_sites``)
        self._sites = lock_sites
        self.chooser = chooser
        self.max_steps = max_steps or scenario.max_steps
        self.threads: list[ModelThread] = []
        self._names: set[str] = set()
        #: live threads by index (a dict: leaving is O(1), iteration stays in index order)
        self._live: dict[int, ModelThread] = {}
        #: live threads that are not daemons (the run is over when none is left)
        self._users = 0
        # Kept up to date on every state change so a step costs O(woken), not O(threads):
        # threads in state RUN (index order), threads WOKEN since the last step, and the
        # BLOCKED threads by the resource they wait on.
        self._runnable: list[ModelThread] = []
        # the last merge of runnable and ready woken threads, reused while neither changes
        # (a woken thread may stay a candidate for many steps before it is chosen)
        self._merged: list[ModelThread] = []
        self._merged_ready: list[ModelThread] | None = None
        self._woken: list[ModelThread] = []
        #: bumped whenever the set of woken threads changes; the last recheck's answer, valid at its epoch:
        #: (epoch, the shared conditions that held, the ready threads)
        self._woken_epoch = 0
        self._ready_cache: tuple[int, list[Callable[[], bool]], list[ModelThread]] | None = None
        self._blocked: dict[int, list[ModelThread]] = {}
        # Herds (an execution without eager wakes, see ``sync.Backend.eager_wakes``): the waiters of a
        # shared wait (a mutex, a spinlock, an rw-semaphore side, a completion: one condition that reads
        # only the resource) sleep by (resource, op) in index order, and a wake moves them as one list.
        # The candidates are exactly those of per-thread wakes (the same draws, the same run), but a
        # herd of W waiters costs O(1) per wake and per recheck instead of O(W) (a global mutex that
        # 1,000 processes wait for was a quadratic run). Members of a herd keep state BLOCKED.
        self._sleepers: dict[int, dict[str, list[ModelThread]]] = {}
        #: woken herds by (resource id, op): (resource, members in index order, the shared condition)
        self._herds: dict[tuple[int, str], tuple[object, list[ModelThread], Callable[[], bool]]] = {}
        #: every step (thread, op, resource); without ``record`` only counted (a long main-job run)
        self.trace: list[tuple[int, str, object]] = [] if record else _CountingTrace()
        self.lock_order = LockOrder()
        self.problem: Problem | None = None
        self.preemptions = 0
        self.status = ""
        self._always = chooser.always
        self._cur: ModelThread | None = None
        self._task = sync.Task("setup")
        self._hub: Any = None
        self._stopping = False
        #: Ctrl-C stopped this execution (see :func:`_interrupt`)
        self._interrupted = False
        self._finale: Callable[[], object] | None = None
        self.events: list[Event] = []
        #: (lock id, thread index) -> (step, stack) of the acquisition, for deadlock reports
        self.acquired: dict[tuple[int, int], tuple[int, findings.RawStack]] = {}
        #: thread index -> stack at its pending acquire (taken at the scheduling point)
        self._stacks: dict[int, findings.RawStack] = {}
        self.problems: list[Problem] = []
        # modes the chooser asks for (see the module docstring)
        self._retry = getattr(chooser, "retry_steps", False)
        self._past = getattr(chooser, "run_past_failures", False)
        self._lazy = getattr(chooser, "lazy_waits", False)
        self._objs: dict[object, tuple[Any, Callable[[Any], bool]]] = {}
        self._plain: set[object] = set()
        self._rec = getattr(chooser, "records", False)
        self.records: list[StepRecord] = []
        self._keys: dict[int, tuple[int, int]] = {}
        self._made: dict[int, int] = {}
        #: a chooser whose choice is a uniform index (``pick(n)``) is served without a candidate list
        self._pick = _pick_of(chooser)
        #: ``_pick`` when a scheduling point may choose inline (no records, no lazy waits: see ``point``)
        self._quick = self._pick if not (self._rec or self._lazy) else None
        #: the random walk's own stream when its ``pick`` is :meth:`RandomWalk.pick` (the same draw, no call)
        self._rand: Callable[[], float] | None = _random_of(chooser) if self._quick is not None else None
        #: the trace when it only counts (see ``point``)
        self._counted = self.trace if type(self.trace) is _CountingTrace else None
        #: records and retried or lazy waits see every wake (see ``sync.Backend.eager_wakes``); a random walk
        #: or DFS over ready threads only sees threads whose condition holds, however often they are woken
        self.eager_wakes = bool(self._rec or self._retry or self._lazy)
        self._herding = not self.eager_wakes
        # ``critical()``: one model thread runs at a time, so there is nothing to guard; primitives enter it
        # about once a step, so it is a C-level callable handing out a C-level context manager (no Python
        # call at all). A reentrant lock of this execution only: greenlets switch inside it (a wait),
        # always on the OS thread that runs the execution, which owns it.
        self.critical: Callable[[], AbstractContextManager[Any]] = itertools.repeat(threading.RLock()).__next__

    @property
    def live(self) -> list[ModelThread]:
        """Threads not yet finished, in index order."""
        return list(self._live.values())

    # -- the run -------------------------------------------------------------
    def run(self) -> Outcome:
        """Build the scenario, run it to its end and return what happened.

        Ctrl-C (``KeyboardInterrupt``) stops the execution where it is: no further scheduling
        decisions (see :func:`_interrupt`), the suspended threads unwound, and the interrupt
        propagates to the caller.
        """
        global _running
        self._hub = getcurrent()
        outer, _running = _running, self
        _catch_interrupts()
        try:
            with sync.use_backend(self):
                try:
                    instance = self.scenario.build()
                    self._finale = instance.finale
                    for name, fn in instance.threads:
                        self._spawn(name, fn, daemon=False)
                    declared = tuple([t.name for t in self.threads])
                    if not self.threads and self._finale is not None:
                        self._spawn("finale", self._finale, daemon=False)
                        self._finale = None
                    self._loop()
                    for _, members, _ in self._herds.values():  # as per-thread wakes would have left them
                        for t in members:
                            t.state = WOKEN
                    if self.status == FINISHED:
                        if self.problems:
                            self.status = FAILED
                        else:
                            self._check(instance.checks)
                finally:
                    self._teardown()
        finally:
            _running = outer
        return Outcome(
            self.status,
            self.trace,
            self.threads,
            declared,
            self.preemptions,
            self.problem,
            self.lock_order.cycle,
            tuple(self.events),
            tuple(self.problems),
            self.records if self._rec else None,
        )

    def _loop(self) -> None:
        # A model thread that chose a thread not yet started hands it to the hub
        # (``_switch``), which starts it here: a greenlet started from inside
        # another one inherits that one's recursion depth, and a chain of
        # thousands of such starts ended in RecursionError (about 1,000 processes).
        handed: ModelThread | None = None
        while not self.status:
            nxt = handed if handed is not None else self._next(None)
            if nxt is None:
                return
            self._cur = nxt
            self._task = nxt.task
            if nxt.glet is None:  # start it on a worker greenlet
                nxt.glet = self._worker()
                handed = nxt.glet.switch(self, nxt)
            else:
                handed = nxt.glet.switch()

    def _check(self, checks: list[Callable[[], object]]) -> None:
        self._task = sync.Task("end-of-run check")
        for check in checks:
            try:
                check()
            except Exception as error:
                # reported at the last step: the check looks at the state the last step left
                problem = findings.from_exception(error, None, len(self.trace) - 1)
                problem.details = {"when": "end-of-run check, after the last step", **problem.details}
                self._fail(problem)
                return

    def _teardown(self) -> None:
        self._stopping = True
        self._interrupted = False  # the interrupt is on its way to the caller: the others unwind quietly
        for th in list(self._live.values()):
            if th.glet is not None:  # started and suspended
                self._cur = th
                self._task = th.task
                with contextlib.suppress(Abandon, Exception):
                    th.glet.throw(Abandon)
        self._cur = None
        # every worker that ran a thread of this execution is parked again: keep it for the next one
        # (the outcome keeps neither the workers nor the threads' functions, as ended greenlets kept nothing)
        pool = _pool()
        for th in self.threads:
            glet = th.glet
            if glet is not None and len(pool) < _POOL_SIZE and _is_parked(glet):
                pool.append(glet)
            th.glet = th.fn = None

    def _worker(self) -> Any:
        """A parked worker greenlet from the pool (this hub its parent again), or a new one."""
        pool = _pool()
        while pool:
            glet = pool.pop()
            if not glet.dead:
                glet.parent = self._hub
                return glet
        return greenlet(_work, self._hub)

    # -- threads -------------------------------------------------------------
    def _spawn(self, name: str, fn: Callable[[], object], daemon: bool) -> ModelThread:
        idx = len(self.threads)
        base = name
        if name in self._names:
            name = f"{name}#{idx}"
        self._names.add(name)
        th = ModelThread(idx, name, daemon, base)
        th.fn = fn
        self.threads.append(th)
        self._live[idx] = th
        if not daemon:
            self._users += 1
        self._runnable.append(th)  # the newest index: order kept
        self._merged_ready = None
        return th

    def _body(self, th: ModelThread) -> None:
        fn = th.fn
        assert fn is not None
        try:
            fn()
        except Abandon:
            return
        except Exception as error:
            if not self._stopping:
                self._fail(findings.from_exception(error, th.name, len(self.trace) - 1), end=not self._past)
                if self._past:
                    self._retire(th)
            return
        if not self._stopping:
            self._exit(th)

    def _retire(self, th: ModelThread) -> None:
        """A thread that failed is done; the others run on (``run_past_failures``)."""
        th.state = DONE
        del self._live[th.idx]
        if not th.daemon:
            self._users -= 1
        if th in self._runnable:
            _remove(self._runnable, th)
            self._merged_ready = None
        self._maybe_finale(th)

    def _maybe_finale(self, th: ModelThread) -> None:
        """Start the finale once the last non-daemon thread is done."""
        if not th.daemon and self._finale is not None and not self._users:
            fn, self._finale = self._finale, None
            finale = self._spawn("finale", fn, daemon=False)
            finale.parents = tuple(t.last for t in self.threads if not t.daemon and t.last >= 0)

    def _exit(self, th: ModelThread) -> None:
        th.state = DONE
        del self._live[th.idx]
        if not th.daemon:
            self._users -= 1
        _remove(self._runnable, th)
        self._merged_ready = None
        task = th.task
        if task.held or task.srcu_depth or task.atomic_depth or task.non_block_depth:
            left = [describe(lock) for lock in task.held]
            left += [f"read section of {describe(s)}" for s in task.srcu_depth]
            if task.non_block_depth:
                left.append("a non-blockable section")
            elif task.atomic_depth and not task.held:
                left.append("atomic context")
            self._fail(
                Problem(
                    Kind.HELD_AT_EXIT,
                    f"thread {th.name} exited still holding {', '.join(left)}",
                    th.name,
                    len(self.trace) - 1,
                ),
                end=not self._past,
            )
            if self._past:
                self._maybe_finale(th)
        else:
            self._maybe_finale(th)

    def _fail(self, problem: Problem, end: bool = True) -> None:
        if self.problem is None:
            self.problem = problem
        self.problems.append(problem)
        if end:
            self.status = FAILED

    # -- choosing the next step ----------------------------------------------
    def _next(self, cur: ModelThread | None) -> ModelThread | None:
        """Pick and record the next step, or end the run (status set) and return None."""
        if self.status:
            return None
        trace = self.trace
        if len(trace) >= self.max_steps:
            self.status = STEP_BOUND
            return None
        nxt: ModelThread | None
        runnable = self._runnable
        if not self._woken and not self._herds and not self._lazy:
            # the common case, in O(1) whatever the number of live threads: no woken waiter to recheck,
            # the candidates are the runnable list itself (not a copy: a chooser reads it and keeps nothing)
            n = len(runnable)
            if n > 1 or (n and self._always):
                if self._pick is not None:  # the random walk: the same draw ``choose`` would make
                    nxt = runnable[self._pick(n)]
                else:
                    nxt = self.chooser.choose(runnable, cur, self)
                    if nxt is None:
                        self.status = ABORTED
                        return None
                if nxt is not cur and cur is not None and cur.state == RUN:
                    self.preemptions += 1
                return self._take(nxt, trace)
            if n:
                return self._take(runnable[0], trace)
            cands = runnable
        elif self._pick is not None and not (self._lazy or self._retry) and runnable:
            # the random walk with woken threads: the choice is an index, found in the merge of
            # runnable and ready threads without building it (binary searches, however many are ready:
            # a contended global lock's herd costs no copy of the runnable list)
            if self._herds:
                lists = self._ready_lists()
                if lists:
                    k = self._pick(len(runnable) + sum(map(len, lists)))
                    nxt = _merged_at(runnable, lists[0], k) if len(lists) == 1 else _kth_of([runnable, *lists], k)
                    if nxt is not cur and cur is not None and cur.state == RUN:
                        self.preemptions += 1
                    return self._take(nxt, trace)
                cands = runnable
            else:
                ready = self._recheck_woken()
                if ready:
                    k = self._pick(len(runnable) + len(ready))
                    nxt = _merged_at(runnable, ready, k)
                    if nxt is not cur and cur is not None and cur.state == RUN:
                        self.preemptions += 1
                    return self._take(nxt, trace)
                cands = runnable
        else:
            cands = self._candidates()
        if not cands:
            idle = self._idle()
            if idle is None:
                return None
            cands = [idle]
        if len(cands) == 1 and not self._always:
            nxt = cands[0]
        else:
            nxt = self.chooser.choose(cands, cur, self)
            if nxt is None:
                self.status = ABORTED
                return None
            if nxt is not cur and cur is not None and cur.state == RUN and (not self._lazy or not _parked(cur)):
                self.preemptions += 1
        return self._take(nxt, trace)

    def _take(self, nxt: ModelThread, trace: list[tuple[int, str, object]]) -> ModelThread:
        """Record the step ``nxt`` performs next."""
        if nxt.state != RUN:  # a woken (or timed-out) waiter goes on: it is runnable again
            self._resume(nxt)
        if self._rec:
            self._record(nxt)
        nxt.last = len(trace)
        trace.append((nxt.idx, nxt.op, nxt.res))
        if self._sites and nxt.op in ACQUIRE_OPS:
            self._acquire(nxt, len(trace) - 1)
        return nxt

    def _acquire(self, th: ModelThread, step: int) -> None:
        """Bookkeeping of a lock acquisition step: its step and stack, for deadlock and lock-order reports."""
        self.acquired[(id(th.res), th.idx)] = (step, self._stacks.pop(th.idx, ()))

    # -- records for the partial-order reduction ---------------------------------
    def _key(self, resource: object) -> object:
        """The name of ``resource`` that every execution agrees on.

        A primitive made during the execution is named (creator, n): the n-th
        primitive its creating thread (-1: the scenario's build) made, which
        does not depend on how threads interleave. Anything else keeps its
        identity (it outlives the execution, or only global ops use it).
        """
        if resource is None:
            return None
        key = self._keys.get(id(resource)) or ("object", id(resource))
        if self._lazy and key not in self._objs and key not in self._plain:
            test = _PASSABLE.get(type(resource))  # not isinstance: a freed (poisoned) object must not be touched
            if test is None:
                self._plain.add(key)
            else:
                self._objs[key] = (resource, test)
        return key

    def _record(self, th: ModelThread) -> None:
        rec = StepRecord([("label", th.op, self._key(th.res))], bool(th.task.held), th.blocked_at, ())
        if self._lazy:
            rec.before = {k: test(o) for k, (o, test) in self._objs.items()}
        if th.op == "start":
            rec.parents = th.parents
        if th.timed_out:
            rec.timeout = True
        th.blocked_at = -1
        self.records.append(rec)

    def _fact(self, kind: str, op: str, resource: object) -> None:
        """Add a fact to the running thread's current step."""
        cur = self._cur
        if cur is not None and not self._stopping and cur.last >= 0 and cur.last == len(self.trace) - 1:
            self.records[-1].facts.append((kind, op, self._key(resource)))

    def created(self, primitive: object) -> None:
        if self._rec:
            creator = self._cur.idx if self._cur is not None else -1
            n = self._made.get(creator, 0)
            self._made[creator] = n + 1
            self._keys[id(primitive)] = (creator, n)

    def touch(self, op: str, resource: object) -> None:
        if self._rec:
            self._fact("touch", op, resource)

    def _candidates(self) -> list[ModelThread]:
        """Runnable threads plus woken ones whose condition holds, in index order.

        Without woken threads the candidates are the runnable list itself (not a
        copy: a chooser reads it and keeps nothing), so a step costs the same with
        2 or 10,000 live threads. With ``retry_steps`` every woken thread is a
        candidate: its retry checks the condition.
        """
        woken = self._woken
        if self._lazy:
            runnable = [t for t in self._runnable if t.op not in LAZY_WAITS or passable(t.res)]
            if not woken:
                return runnable
        elif not woken and not self._herds:
            return self._runnable
        else:
            runnable = self._runnable
        if self._retry:
            return sorted(runnable + woken, key=_IDX)
        if self._herds:
            lists = self._ready_lists()
            return sorted([*runnable, *itertools.chain(*lists)], key=_IDX) if lists else runnable
        ready = self._recheck_woken()
        if not ready:
            return runnable
        if runnable is self._runnable:
            return self._merge(runnable, ready)
        return sorted(runnable + ready, key=_IDX)

    def _recheck_woken(self) -> list[ModelThread]:
        """Woken threads whose condition holds, in index order; the others sleep again.

        ``_woken`` is kept in index order and never changed in place (it is what this returns). The
        waiters of a lock, an rw-semaphore side or a completion share one condition (it reads only the
        resource), so a herd of them costs one evaluation per step; while no woken thread came or went
        (``_woken_epoch``) and every shared condition gives the same answer, the last answer is the
        answer, so a step with a herd costs O(distinct conditions), not O(woken threads).
        """
        cache = self._ready_cache
        if cache is not None and cache[0] == self._woken_epoch:
            for ready_fn in cache[1]:
                if not ready_fn():
                    break
            else:
                return cache[2]
        ready = []
        shared: dict[tuple[int, str], tuple[Callable[[], bool], bool]] = {}
        own = False
        blocked = self._blocked
        for t in self._woken:
            op = t.op
            if op in _SHARED_WAITS:
                key = (id(t.res), op)
                verdict = shared.get(key)
                if verdict is None:
                    fn = cast("Callable[[], bool]", t.ready)
                    verdict = shared[key] = (fn, bool(fn()))
                holds = verdict[1]
            else:
                own = True
                holds = bool(t.ready())  # type: ignore[misc]
            if holds:
                ready.append(t)
            else:
                t.state = BLOCKED
                blocked.setdefault(t.chan, []).append(t)
        self._woken = ready
        self._woken_epoch += 1
        self._ready_cache = None if own else (self._woken_epoch, [fn for fn, v in shared.values() if v], ready)
        return ready

    def _ready_lists(self) -> list[list[ModelThread]]:
        """The woken threads whose condition holds, as index-ordered lists: own conditions, then herds.

        A herd whose condition does not hold goes back to sleep as a whole, as each of its members
        would (per-thread wakes: the same candidates).
        """
        lists = []
        if self._woken:
            own = self._recheck_woken()
            if own:
                lists.append(own)
        herds = self._herds
        for key, (resource, members, ready) in list(herds.items()):
            if ready():
                lists.append(members)
            else:
                del herds[key]
                self._sleep_herd(resource, key[1], members)
        return lists

    def _sleep_herd(self, resource: object, op: str, members: list[ModelThread]) -> None:
        """``members`` (index order) sleep on ``resource`` again, with whoever went to sleep there meanwhile."""
        ops = self._sleepers.setdefault(id(resource), {})
        asleep = ops.get(op)
        ops[op] = members if asleep is None else sorted([*asleep, *members], key=_IDX)

    def _merge(self, runnable: list[ModelThread], ready: list[ModelThread]) -> list[ModelThread]:
        """``runnable`` and ``ready`` merged in index order; reused while neither changes."""
        if ready == self._merged_ready:
            return self._merged
        cands = runnable.copy()
        for t in ready:
            insort(cands, t, key=_IDX)
        self._merged = cands
        self._merged_ready = ready  # never changed in place (see _recheck_woken)
        return cands

    def _resume(self, th: ModelThread) -> None:
        """``th`` was chosen while WOKEN (or BLOCKED with a timeout): make it RUN again."""
        if th.state == WOKEN:
            woken = self._woken.copy()  # a new list: the old one may be a returned (cached) answer
            woken.remove(th)
            self._woken = woken
            self._woken_epoch += 1
        elif (at := self._herd_position(th)) is not None:
            members = self._herds[(id(th.res), th.op)][1]  # changed in place: no answer keeps it past the step
            del members[at]
            if not members:
                del self._herds[(id(th.res), th.op)]
        else:  # a timed wait (never in a herd)
            self._blocked[th.chan].remove(th)
        th.state = RUN
        insort(self._runnable, th, key=_IDX)
        self._merged_ready = None

    def _herd_position(self, th: ModelThread) -> int | None:
        """Where ``th`` sits in the woken herd of its (resource, op), by binary search; None if it is in none."""
        herd = self._herds.get((id(th.res), th.op))
        if herd is None:
            return None
        members = herd[1]
        at = bisect_left(members, th.idx, key=_IDX)
        return at if at < len(members) and members[at] is th else None

    def _idle(self) -> ModelThread | None:
        """No thread can run: fire a timeout, or end the run as finished or deadlocked."""
        live = self._live.values()
        if not self._users:
            self.status = FINISHED
            return None
        for t in live:
            if t.timeout:
                t.timed_out = True
                return t
        self._fail(findings.deadlock(self.live, self.live, len(self.trace) - 1, self.acquired))
        return None

    def _switch(self, nxt: ModelThread | None) -> None:
        if nxt is None:
            self._hub.switch()
        elif nxt.glet is None:  # not started yet: the hub starts it (see _loop)
            self._hub.switch(nxt)
        else:
            self._cur = nxt
            self._task = nxt.task
            nxt.glet.switch()

    # -- sync.Backend ----------------------------------------------------------
    def current(self) -> sync.Task:
        return self._task

    def point(self, op: str, resource: object) -> None:
        cur = self._cur
        if cur is None or self._stopping or cur.task.observing:
            return
        if self._rec:
            self._fact("end", op, resource)
        cur.op = op
        cur.res = resource
        if op in ACQUIRE_OPS:
            stack: findings.RawStack = ()
            if self._sites:
                stack = self._stacks[cur.idx] = findings.stack_here()
            held = cur.task.held
            if held:  # lockdep records the dependency at the attempt, before any wait
                self.lock_order.acquire(held, resource, cur.name, len(self.trace), stack, self.acquired, cur.idx)
        pick = self._quick
        if pick is not None and not self._woken and not self._herds and not self.status:
            # Most steps of a random walk: no woken waiter, no records, no lazy waits. The step
            # ``_next`` and ``_take`` would choose and record (the same draw), made here inline.
            counted = self._counted  # an unrecorded run: the counting trace's fields, without its methods
            k = counted._steps if counted is not None else len(self.trace)
            runnable = self._runnable
            n = len(runnable)
            if n and k < self.max_steps:
                if n > 1:
                    rand = self._rand
                    chosen = runnable[int(rand() * n) if rand is not None else pick(n)]
                    if chosen is not cur and cur.state == RUN:
                        self.preemptions += 1
                else:
                    chosen = runnable[0]
                chosen.last = k
                if counted is not None:
                    counted._steps = k + 1
                    counted._last = (chosen.idx, chosen.op, chosen.res)
                else:
                    self.trace.append((chosen.idx, chosen.op, chosen.res))
                if self._sites and chosen.op in ACQUIRE_OPS:
                    self._acquire(chosen, k)
                if chosen is not cur:
                    if chosen.glet is not None:
                        self._cur = chosen
                        self._task = chosen.task
                        chosen.glet.switch()
                    else:
                        self._switch(chosen)
                return
        nxt = self._next(cur)
        if nxt is not cur:
            if nxt is not None and nxt.glet is not None:  # started: one direct switch, from this frame
                self._cur = nxt
                self._task = nxt.task
                nxt.glet.switch()
            else:
                self._switch(nxt)

    def walk_point(self, element: object) -> None:
        """A list walk's scheduling point (a method, not an attribute bound to this execution: no reference cycle)."""
        self.point("walk", element)

    def wait_until(
        self,
        resource: object,
        ready: Callable[[], bool],
        op: str,
        timeout: float | None = None,
        channel: object | None = None,
    ) -> bool:
        if ready():
            if self._rec:
                self._fact("check", op, resource)
            return True
        cur = self._cur
        if cur is None:
            raise RuntimeError(f"{op} on {describe(resource)} would block outside a model thread")
        if self._stopping:
            # a thread unwinding from Ctrl-C keeps its KeyboardInterrupt (an Abandon would end it quietly)
            raise KeyboardInterrupt if self._interrupted else Abandon
        task = cur.task
        while True:
            if self._rec:
                self._fact("block", op, resource)
                cur.blocked_at = len(self.trace) - 1
            cur.state = BLOCKED
            _remove(self._runnable, cur)
            self._merged_ready = None
            if self._herding and timeout is None and channel is None and op in _SHARED_WAITS:
                insort(self._sleepers.setdefault(id(resource), {}).setdefault(op, []), cur, key=_IDX)
            else:
                cur.chan = chan = id(resource if channel is None else channel)
                self._blocked.setdefault(chan, []).append(cur)
            cur.ready = ready
            cur.op = op
            cur.res = resource
            cur.timeout = timeout is not None
            task.blocked_on = resource
            self._switch(self._next(cur))
            task.blocked_on = None  # chosen again: _next made it RUN
            cur.ready = None
            cur.timeout = False
            if cur.timed_out:
                cur.timed_out = False
                return False
            if not self._retry or ready():
                if self._rec:
                    self._fact("check", op, resource)
                return True
            if self._rec:  # a failed retry: the condition does not hold, sleep again
                self.records[-1].failed = True

    def wake(self, resource: object) -> None:
        if self._rec:
            self._fact("wake", "", resource)
        waiting = self._blocked.pop(id(resource), None)
        if waiting:
            if self._herding:
                waiting = self._run_settled(waiting)
            if waiting:
                for t in waiting:
                    t.state = WOKEN
                self._woken = sorted([*self._woken, *waiting], key=_IDX)  # a new list, in index order
                self._woken_epoch += 1
        if self._sleepers:
            ops = self._sleepers.pop(id(resource), None)
            if ops:
                herds = self._herds
                for op, members in ops.items():
                    key = (id(resource), op)
                    herd = herds.get(key)
                    if herd is None:
                        ready = members[0].ready
                        assert ready is not None
                        herds[key] = (resource, members, ready)
                    else:  # woken again before a step rechecked it
                        herd[1][:] = sorted([*herd[1], *members], key=_IDX)

    def _run_settled(self, waiting: list[ModelThread]) -> list[ModelThread]:
        """Make the woken waiters of monotone waits whose condition holds runnable now; return the others.

        Their condition holds until they run (``_MONOTONE_WAITS``), so every step until then would
        find them ready: they are candidates exactly as woken ones would be (the candidates are in
        index order either way), without a recheck at each step (a woken ``synchronize_srcu`` caller
        may wait a thousand steps to be chosen among a thousand threads), and the steps go on taking
        the quick path. Only without records, retries and lazy waits (those want every wake seen).
        """
        others = []
        runnable = self._runnable
        for t in waiting:
            if t.op in _MONOTONE_WAITS and t.ready():  # type: ignore[misc]
                t.state = RUN
                insort(runnable, t, key=_IDX)
                self._merged_ready = None
            else:
                others.append(t)
        return others

    def spawn_daemon(self, name: str, fn: Callable[[], None]) -> None:
        if self._rec:
            self._fact("spawn", "", None)
        th = self._spawn(name, fn, daemon=True)
        if self._cur is not None and self._cur.last >= 0:
            th.parents = (self._cur.last,)

    def has_waiters(self, resource: object) -> bool:
        key = id(resource)
        return bool(self._blocked.get(key) or self._sleepers.get(key)
                    or any(herd_key[0] == key for herd_key in self._herds))

    def step(self) -> int | None:
        return len(self.trace) - 1 if self._cur is not None else None

    def note(self, what: str, label: str) -> None:
        step = len(self.trace) - 1 if self._cur is not None else None  # as step() says
        self.events.append(Event(step, self._task.name, what, label))

    def task_site(self, task: sync.Task) -> str | None:
        for th in self._live.values():
            if th.task is task:
                if th is self._cur:
                    return sync.frame_site(sys._getframe(1))
                return sync.frame_site(getattr(th.glet, "gr_frame", None))
        return None
