"""Synchronisation primitives: the only place in the model that blocks or switches.

Models ``kernel/locking`` (mutex, spinlock, rw-semaphore), wait queues,
completions, atomics, ``might_sleep()`` and ``non_block_start()/end()``.

Every primitive keeps its state as plain Python and delegates the three things
that depend on *how* threads run to the active :class:`Backend`:

* ``critical()`` guards a primitive's state while it is inspected or changed;
* ``wait_until(resource, ready)`` blocks the current task until ``ready()``
  holds (called inside ``critical()``), and ``wake(resource)`` re-checks the
  tasks waiting on ``resource``;
* ``point(op, resource)`` is a scheduling point: a place where another task may
  run first.

The default :class:`ThreadBackend` runs model code on real OS threads. The
deterministic explorer (:mod:`mmu_notifier.explore`) installs its own backend
with :func:`use_backend`; no other module knows it exists.

Locking rule of this module: a primitive never calls model code while inside
``critical()``, and ``point()`` is never called inside ``critical()``.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from _thread import allocate_lock as _new_lock
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

from mmu_notifier.errors import DeadlockError, LockFreedError, LockingError, SleepInAtomicError

__all__ = [
    "Atomic",
    "Backend",
    "BargingLock",
    "Completion",
    "Mutex",
    "RWSemaphore",
    "SpinLock",
    "Task",
    "ThreadBackend",
    "WaitQueue",
    "atomic_context",
    "backend",
    "current",
    "might_sleep",
    "non_block",
    "observing",
    "use_backend",
    "yield_now",
]


class Task:
    """Per-thread context: the model's ``current`` plus its preempt count.

    ``atomic_depth`` counts spinlocks held and softirq-like sections,
    ``non_block_depth`` counts ``non_block_start()`` sections (callbacks of a
    non-blockable invalidation). ``held`` lists the locks the task holds in
    acquisition order (what lockdep records); ``blocked_on`` names what it
    waits for, so a deadlock report can print the wait-for cycle.
    """

    __slots__ = ("name", "atomic_depth", "non_block_depth", "held", "blocked_on", "srcu_depth", "ident", "observing")

    def __init__(self, name: str) -> None:
        self.name = name
        #: the OS thread running the task (ThreadBackend), for locating it in a report
        self.ident: int | None = None
        self.atomic_depth = 0
        self.non_block_depth = 0
        #: inside :func:`observing` (the run's own checks): no scheduling point of its own
        self.observing = 0
        self.srcu_depth: dict[object, int] = {}
        self.held: list[object] = []
        self.blocked_on: object | None = None

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


class Backend:
    """How model tasks run. Subclasses provide the four operations below.

    ``walk_point`` is ``None`` when list walks need no scheduling point (real
    threads interleave anywhere anyway); the explorer sets it to a callable so
    it can preempt a walker between loading a list element and using it.
    """

    name = "abstract"
    walk_point: Callable[[object], None] | None = None
    #: True when the backend wants a primitive to wake its waiters at every change that may concern
    #: them, not only when a waiter's condition now holds: the explorer's partial-order reduction
    #: orders a waiter after the step that woke it, and a retried wait is a step of its own, so the
    #: wakes must not depend on the order the search is trying (see ``Srcu.read_unlock``).
    eager_wakes = False

    def current(self) -> Task:
        """The task running now."""
        raise NotImplementedError

    def critical(self) -> AbstractContextManager[Any]:
        """A context that makes a primitive's state change atomic."""
        raise NotImplementedError

    def wait_until(
        self,
        resource: object,
        ready: Callable[[], bool],
        op: str,
        timeout: float | None = None,
        channel: object | None = None,
    ) -> bool:
        """Block (inside ``critical()``) until ``ready()``; False if ``timeout`` expired.

        The task waits *on* ``resource`` (what reports name) and is woken by ``wake(channel)``;
        ``channel`` defaults to ``resource``. A primitive whose waiters wait for different things
        gives each thing a channel of its own and wakes only the ones whose condition may now hold:
        SRCU's ``synchronize_srcu`` callers each wait for their own grace period, and waking all of
        them at every grace period's end made a run with many waiters quadratic. :meth:`has_waiters`
        answers by the wake channel (``has_waiters(channel)``): it runs at every free of an object
        holding a lock (``check_no_locks_freed``), and locks are waited for on themselves.
        """
        raise NotImplementedError

    def wake(self, resource: object) -> None:
        """Let tasks waiting on ``resource`` (or on the channel ``resource``) re-check their condition.

        Called inside ``critical()``.
        """
        raise NotImplementedError

    def point(self, op: str, resource: object) -> None:
        """A scheduling point before ``op`` on ``resource``."""

    def spawn_daemon(self, name: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` in a background task (the model's kworker)."""
        raise NotImplementedError

    def created(self, primitive: object) -> None:
        """A primitive was just constructed (the explorer names it by who created it; others ignore it)."""

    def touch(self, op: str, resource: object) -> None:
        """The running task changed ``resource``'s state without a scheduling point (recorded by the explorer)."""

    def has_waiters(self, resource: object) -> bool:
        """True when some task is blocked waiting to be woken by ``wake(resource)`` (see :meth:`wait_until`).

        Asked at every free of an object that embeds a lock: it must not cost more with more tasks.
        """
        return False

    def task_site(self, task: Task) -> str | None:
        """Where ``task`` is executing now, as ``file:line in function`` outside the core, if known."""
        return None

    def step(self) -> int | None:
        """The index of the step running now, for backends that number steps (the explorer); else ``None``."""
        return None

    def note(self, what: str, label: str) -> None:
        """Record an event of the running step (``kmalloc``, ``kfree`` ...) for the timeline; a no-op here."""


_CORE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def frame_site(frame: Any) -> str | None:
    """``file:line in function`` of the first frame at or above ``frame`` outside the core package.

    The driver's, test's or scenario's line that is running (or waiting) there, not the model's
    internals; ``None`` when every frame is the core's.
    """
    while frame is not None and frame.f_code.co_filename.startswith(_CORE_DIR):
        frame = frame.f_back
    if frame is None:
        return None
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


class BargingLock:
    """A lock for short sections shared by OS threads under the GIL, taken only by a thread that runs.

    Not a model primitive (nothing in the kernel corresponds): the lock the :class:`ThreadBackend`
    guards primitive state with, and the invariants recorder its bookkeeping. A plain
    ``threading.Lock`` convoys there. When the GIL is switched away from a thread inside a short
    section, the next thread that wants the section sleeps in the OS on the lock; the release wakes
    it and, on the machine's other core, it takes the lock at once, *before* it has the GIL again.
    The releasing thread still runs (it has the GIL) and soon wants the section itself: it finds the
    lock held by a thread that waits for the GIL, so it sleeps, which hands the GIL over, and so on.
    From then on every entry is a futex sleep and wake plus a GIL handoff, and since the lock is now
    nearly always owned by a thread waiting for the GIL, the pattern feeds itself until the run
    ends: the main job's 1,000 processes on 8 threads took 10-25 s instead of 4-5 s, half of it
    system time, with 160,000-270,000 contended entries (7,000-10,000 without a convoy) and up to a
    million context switches. Yielding the GIL a few times before blocking made it rarer, not gone.

    Here a waiter never *takes* the lock while it sleeps: it parks on a gate of its own (a
    registration made before its second try, so no release is missed), a release opens the oldest
    gate, and the woken waiter, once it runs again (holding the GIL), tries the lock like any other
    thread. So the owner is always a running thread, or one the GIL switched out in the middle of
    its few bytecodes: rare, and it does not feed itself. A running thread may overtake a woken
    waiter; the waiter then parks again and the owner's release wakes it. Uncontended, entering
    and leaving is a non-blocking ``acquire`` and a ``release`` of a ``threading.Lock``. Not
    reentrant; ``with lock:`` only (or :meth:`acquire`/:meth:`release`).
    """

    __slots__ = ("_lock", "_parked")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: gates of the threads waiting for the lock, oldest first; each gate is a held lock its waiter sleeps on
        self._parked: deque[Any] = deque()

    def __enter__(self) -> None:
        if not self._lock.acquire(False):
            self._wait()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:  # no *args: no tuple per exit
        self._lock.release()
        if self._parked:
            self._open_one()

    def acquire(self) -> None:
        """Take the lock, sleeping (parked, without the GIL) while a running thread holds it."""
        if not self._lock.acquire(False):
            self._wait()

    def release(self) -> None:
        """Release the lock and wake the oldest parked waiter, if any."""
        self._lock.release()
        if self._parked:
            self._open_one()

    def _wait(self) -> None:
        lock = self._lock
        parked = self._parked
        while True:
            gate = _new_lock()
            gate.acquire()
            # registered before the second try: a release after that try opens a gate (every step is atomic
            # under the GIL), so a waiter never sleeps through the release that would let it in
            parked.append(gate)
            if lock.acquire(False):
                with suppress(ValueError):  # a ValueError: a release already opened it, to wake this thread
                    parked.remove(gate)
                return
            try:
                gate.acquire()  # sleeps without the GIL until a release opens the gate
            except BaseException:  # interrupted (Ctrl-C on the main thread): leave the queue
                try:
                    parked.remove(gate)
                except ValueError:  # a release opened it for this thread: the next waiter gets the wake instead
                    self._open_one()
                raise
            if lock.acquire(False):
                return

    def _open_one(self) -> None:
        try:
            gate = self._parked.popleft()
        except IndexError:  # another releaser took the last one
            return
        gate.release()

    def locked(self) -> bool:
        """True while some thread holds the lock."""
        return self._lock.locked()


class _Waiter:
    """A task sleeping in :meth:`ThreadBackend.wait_until`: its condition and the gate it sleeps on."""

    __slots__ = ("ready", "exclusive", "gate", "woken")

    def __init__(self, ready: Callable[[], bool], exclusive: bool) -> None:
        self.ready = ready
        #: waiting for something only one waiter can get (a mutex, a spinlock, the write side)
        self.exclusive = exclusive
        self.gate = _new_lock()
        self.gate.acquire()
        #: the gate was opened and the waiter has not re-checked yet
        self.woken = False

    def rearm(self) -> None:
        """Woken, but the condition no longer holds: sleep again on a fresh gate."""
        self.gate = gate = _new_lock()
        gate.acquire()
        self.woken = False


#: the ops whose waiters want something only one of them can get: a wake lets one of them try
_EXCLUSIVE_OPS = frozenset({"mutex_lock", "spin_lock", "down_write"})


class ThreadBackend(Backend):
    """Model tasks are OS threads; one critical section guards all primitive state.

    The critical section is a :class:`BargingLock`: a plain lock convoys under the GIL (see there). A task that
    must wait sleeps on a gate of its own, listed under the resource it waits on; a wake of that
    resource (called inside the critical section, so the state is stable) evaluates each sleeper's
    condition and opens the gates of those whose condition now holds, and, of the sleepers that
    want something only one can get (a mutex, a spinlock, the write side of a semaphore), only the
    oldest, as the kernel's unlock wakes the first waiter. The old every-waiter-rechecks wake woke
    all of them, and each woken thread then fought for the GIL and the critical section only to
    find the condition false again: at 300 processes on 8 threads, 20,000 thread wakes for fewer
    than 300 waits that could go on. A woken task re-checks its condition inside the critical
    section and sleeps again if another task got there first; a wake is never lost, because the
    task that got there first changes the state again later and wakes the resource then.
    """

    name = "threads"

    def __init__(self) -> None:
        self._critical = BargingLock()
        #: sleepers per resource (by ``id``), oldest first; a resource is listed only while it has some
        self._waiters: dict[int, list[_Waiter]] = {}
        self._local = threading.local()
        if type(self).critical is ThreadBackend.critical:  # (a subclass overriding it keeps its own)
            # a C-level callable handing out the section (``with b.critical():`` costs no Python call)
            self.critical = itertools.repeat(self._critical).__next__  # type: ignore[method-assign]

    def critical(self) -> AbstractContextManager[Any]:
        return self._critical

    def current(self) -> Task:
        try:
            task: Task = self._local.task
        except AttributeError:
            task = self._local.task = Task(threading.current_thread().name)
            task.ident = threading.get_ident()
        return task

    def wait_until(
        self,
        resource: object,
        ready: Callable[[], bool],
        op: str,
        timeout: float | None = None,
        channel: object | None = None,
    ) -> bool:
        if ready():
            return True
        woken_by = resource if channel is None else channel
        key = id(woken_by)
        waiter = _Waiter(ready, op in _EXCLUSIVE_OPS)
        sleepers = self._waiters.setdefault(key, [])
        sleepers.append(waiter)
        task = self.current()
        task.blocked_on = resource
        critical = self._critical
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = False
        try:
            while True:
                gate = waiter.gate
                critical.release()
                try:
                    if deadline is None:
                        gate.acquire()
                    else:
                        gate.acquire(True, max(0.0, deadline - time.monotonic()))
                finally:
                    critical.acquire()
                if ready():
                    ok = True
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                waiter.rearm()
        finally:
            task.blocked_on = None
            sleepers.remove(waiter)
            if not sleepers:
                del self._waiters[key]
            elif waiter.woken and not ok:
                # woken but leaving without what it waited for (a timeout): the wake may have been
                # the one an exclusive sleeper behind it needs
                self.wake(woken_by)

    def wake(self, resource: object) -> None:
        sleepers = self._waiters.get(id(resource))
        if not sleepers:
            return
        exclusive_pending = False
        for waiter in sleepers:
            if waiter.woken and waiter.exclusive:
                exclusive_pending = True
                break
        for waiter in sleepers:
            if waiter.woken or (waiter.exclusive and exclusive_pending):
                continue
            if waiter.ready():
                waiter.woken = True
                waiter.gate.release()
                if waiter.exclusive:
                    exclusive_pending = True

    def spawn_daemon(self, name: str, fn: Callable[[], None]) -> None:
        threading.Thread(target=fn, name=name, daemon=True).start()

    def has_waiters(self, resource: object) -> bool:
        return id(resource) in self._waiters

    def task_site(self, task: Task) -> str | None:
        if task.ident is None:
            return None
        if task.ident == threading.get_ident():
            return frame_site(sys._getframe(1))
        return frame_site(sys._current_frames().get(task.ident))


_backend: Backend = ThreadBackend()


def backend() -> Backend:
    """The backend in force."""
    return _backend


class _Using:
    """The context :func:`use_backend` returns (a class, not a generator: every explored schedule enters one)."""

    __slots__ = ("new", "old")

    def __init__(self, new: Backend) -> None:
        self.new = new
        self.old: Backend | None = None

    def __enter__(self) -> Backend:
        global _backend
        self.old, _backend = _backend, self.new
        return self.new

    def __exit__(self, *exc: object) -> None:
        global _backend
        assert self.old is not None
        _backend, self.old = self.old, None


def use_backend(new: Backend) -> AbstractContextManager[Backend]:
    """Run the block with ``new`` as the backend (the explorer's entry point)."""
    return _Using(new)


def current() -> Task:
    """The running task (``current`` in the kernel)."""
    return _backend.current()


def yield_now() -> None:
    """An explicit scheduling point (``cond_resched()``)."""
    _backend.point("yield", None)


def might_sleep(what: str) -> None:
    """Raise :class:`SleepInAtomicError` if the current task may not sleep.

    Models the kernel's ``might_sleep()`` and the ``non_block_start()`` check.
    """
    task = _backend.current()
    if task.atomic_depth or task.non_block_depth:
        if task.atomic_depth:
            spin = [_name(lock) for lock in task.held if isinstance(lock, SpinLock)]
            where = f"holding spinlock {', '.join(spin)}" if spin else "in atomic context"
        else:
            where = "inside a non-blockable invalidation"
        raise SleepInAtomicError(f"{what} may sleep but task {task.name} is {where}")


class _Observing:
    """The context of :func:`observing` (a class, not a generator: it runs once per check)."""

    __slots__ = ("task",)

    def __enter__(self) -> None:
        self.task = task = _backend.current()
        task.observing += 1

    def __exit__(self, *exc: object) -> None:
        self.task.observing -= 1


def observing() -> AbstractContextManager[None]:
    """Run the block as an observer of the model (a run's own checks), not as part of it.

    Nothing in the kernel corresponds: the block reads model state through the
    model's own code (a driver's ``translations`` takes its locks), but the
    deterministic scheduler offers no other thread a step at the block's own
    scheduling points, so a check costs no decisions and does not change which
    interleavings the model's threads see. A lock another thread holds is still
    waited for (the block sleeps, the holder runs), so the reads stay consistent.
    Lockdep does not record the block's acquisitions (they are the checker's, not
    the model's). On real threads the block runs as any code does.
    """
    return _Observing()


@contextmanager
def non_block() -> Iterator[None]:
    """``non_block_start()/non_block_end()``: sleeping inside is a bug."""
    task = _backend.current()
    task.non_block_depth += 1
    try:
        yield
    finally:
        task.non_block_depth -= 1


@contextmanager
def atomic_context() -> Iterator[None]:
    """Softirq-like context (SRCU callbacks run here): sleeping inside is a bug."""
    task = _backend.current()
    task.atomic_depth += 1
    try:
        yield
    finally:
        task.atomic_depth -= 1


def _name(lock: object) -> str:
    return getattr(lock, "name", type(lock).__name__)


class _ExclusiveLock:
    """Shared body of :class:`Mutex` and :class:`SpinLock`: one owner at a time."""

    __slots__ = ("name", "owner", "lock_class")
    _sleeps = True
    _kind = "mutex"
    # the scheduling-point ops, spelt once (not formatted on every call)
    _op_lock = "mutex_lock"
    _op_trylock = "mutex_trylock"
    _op_unlock = "mutex_unlock"

    def __init__(self, name: str, lock_class: str | None = None) -> None:
        self.name = name
        self.owner: Task | None = None
        #: lockdep's class (the kernel's lock class key: one per initialisation site), when the instances of
        #: a per-object lock have names of their own; None: the name is the class
        self.lock_class = lock_class
        _backend.created(self)

    def lock(self) -> None:
        b = _backend
        task = b.current()
        if self._sleeps and (task.atomic_depth or task.non_block_depth):
            might_sleep(f"{self._kind}_lock({self.name})")
        if self.owner is task:
            raise DeadlockError(f"task {task.name} takes {self._kind} {self.name} it already holds")
        b.point(self._op_lock, self)
        with b.critical():
            if self.owner is not None:
                b.wait_until(self, self._is_free, self._op_lock)
            self.owner = task
        self._acquired(task)

    def trylock(self) -> bool:
        """Take the lock if it is free; never blocks."""
        b = _backend
        task = b.current()
        b.point(self._op_trylock, self)
        with b.critical():
            if self.owner is not None:
                return False
            self.owner = task
        self._acquired(task)
        return True

    def unlock(self) -> None:
        b = _backend
        task = b.current()
        if self.owner is not task:
            raise LockingError(f"task {task.name} releases {self._kind} {self.name} it does not hold")
        with b.critical():
            self.owner = None
            b.wake(self)
        task.held.remove(self)
        if not self._sleeps:
            task.atomic_depth -= 1
        b.point(self._op_unlock, self)

    def held_by_current(self) -> bool:
        """True when the running task holds the lock (``lockdep_assert_held``)."""
        return self.owner is _backend.current()

    def _is_free(self) -> bool:
        return self.owner is None

    def _acquired(self, task: Task) -> None:
        task.held.append(self)
        if not self._sleeps:
            task.atomic_depth += 1

    def __enter__(self) -> None:
        self.lock()

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    def __repr__(self) -> str:
        owner = self.owner.name if self.owner else None
        return f"<{type(self).__name__} {self.name} owner={owner}>"


class Mutex(_ExclusiveLock):
    """A sleeping lock (``struct mutex``): taking it may sleep."""

    __slots__ = ()


class SpinLock(_ExclusiveLock):
    """A spinlock: holding it puts the task in atomic context (no sleeping)."""

    __slots__ = ()
    _sleeps = False
    _kind = "spin"
    _op_lock = "spin_lock"
    _op_trylock = "spin_trylock"
    _op_unlock = "spin_unlock"


class RWSemaphore:
    """A reader/writer semaphore (``struct rw_semaphore``, e.g. ``mmap_sem``).

    Like the kernel's, a waiting writer holds back new readers, so a task
    that takes the read side twice while a writer waits deadlocks, as it would
    in the kernel.
    """

    __slots__ = ("name", "writer", "readers", "writers_waiting")

    def __init__(self, name: str) -> None:
        self.name = name
        self.writer: Task | None = None
        self.readers: list[Task] = []
        self.writers_waiting = 0
        _backend.created(self)

    def down_read(self) -> None:
        """Take the read side; may sleep."""
        b = _backend
        task = b.current()
        if task.atomic_depth or task.non_block_depth:
            might_sleep(f"down_read({self.name})")
        if self.writer is task:
            raise DeadlockError(f"task {task.name} takes {self.name} for read while holding it for write")
        b.point("down_read", self)
        with b.critical():
            if not self._read_ok():
                b.wait_until(self, self._read_ok, "down_read")
            self.readers.append(task)
        task.held.append(self)

    def down_read_trylock(self) -> bool:
        """Take the read side if that needs no wait."""
        b = _backend
        task = b.current()
        b.point("down_read_trylock", self)
        with b.critical():
            if not self._read_ok():
                return False
            self.readers.append(task)
        task.held.append(self)
        return True

    def up_read(self) -> None:
        """Release the read side."""
        b = _backend
        task = b.current()
        with b.critical():
            if task not in self.readers:
                raise LockingError(f"task {task.name} releases {self.name} for read without holding it")
            self.readers.remove(task)
            b.wake(self)
        task.held.remove(self)
        b.point("up_read", self)

    def down_write(self) -> None:
        """Take the write side; may sleep."""
        b = _backend
        task = b.current()
        if task.atomic_depth or task.non_block_depth:
            might_sleep(f"down_write({self.name})")
        if self.writer is task or task in self.readers:
            raise DeadlockError(f"task {task.name} takes {self.name} for write while holding it")
        b.point("down_write", self)
        with b.critical():
            if not self._write_ok():
                self.writers_waiting += 1
                try:
                    b.wait_until(self, self._write_ok, "down_write")
                finally:
                    self.writers_waiting -= 1
            self.writer = task
        task.held.append(self)

    def down_write_trylock(self) -> bool:
        """Take the write side if that needs no wait."""
        b = _backend
        task = b.current()
        b.point("down_write_trylock", self)
        with b.critical():
            if not self._write_ok():
                return False
            self.writer = task
        task.held.append(self)
        return True

    def up_write(self) -> None:
        """Release the write side."""
        b = _backend
        task = b.current()
        with b.critical():
            if self.writer is not task:
                raise LockingError(f"task {task.name} releases {self.name} for write without holding it")
            self.writer = None
            b.wake(self)
        task.held.remove(self)
        b.point("up_write", self)

    def downgrade_write(self) -> None:
        """Turn a held write lock into a read lock without letting a writer in."""
        b = _backend
        task = b.current()
        with b.critical():
            if self.writer is not task:
                raise LockingError(f"task {task.name} downgrades {self.name} without holding it for write")
            self.writer = None
            self.readers.append(task)
            b.wake(self)
        b.touch("downgrade_write", self)

    def is_write_locked_by_current(self) -> bool:
        """``lockdep_assert_held_write`` for the running task."""
        return self.writer is _backend.current()

    def is_locked_by_current(self) -> bool:
        """``lockdep_assert_held`` (either side) for the running task."""
        task = _backend.current()
        return self.writer is task or task in self.readers

    def _read_ok(self) -> bool:
        return self.writer is None and self.writers_waiting == 0

    def _write_ok(self) -> bool:
        return self.writer is None and not self.readers

    def __repr__(self) -> str:
        writer = self.writer.name if self.writer else None
        return f"<RWSemaphore {self.name} writer={writer} readers={len(self.readers)}>"


class WaitQueue:
    """``wait_queue_head_t`` with ``wait_event`` / ``wake_up_all``.

    The condition of :meth:`wait_event` is evaluated with the primitive state
    guarded, so it must only read plain fields (no locks, no model calls). A
    condition that needs a lock uses :meth:`wait_event_locked`.
    """

    __slots__ = ("name", "_wakes")

    def __init__(self, name: str) -> None:
        self.name = name
        self._wakes = 0  # wake-ups so far: a waiter that checked before a wake-up does not sleep through it
        _backend.created(self)

    def wait_event(self, condition: Callable[[], bool], timeout: float | None = None) -> bool:
        """Sleep until ``condition()``; with ``timeout`` (seconds) return False on expiry."""
        b = _backend
        might_sleep(f"wait_event({self.name})")
        b.point("wait_event", self)
        with b.critical():
            return b.wait_until(self, condition, "wait_event", timeout)

    def wait_event_locked(
        self, condition: Callable[[], bool], lock: Mutex | SpinLock, timeout: float | None = None
    ) -> bool:
        """Sleep until ``condition()`` holds, evaluating it with ``lock`` held; False on timeout.

        Models ``wait_event(wq, cond)`` whose ``cond`` takes a lock itself (the fixed
        ``mmu_interval_notifier_remove``: ``mmu_interval_seq_released`` reads the sequence under
        the spinlock). The caller must not hold ``lock``. Each round registers as a waiter
        (``prepare_to_wait``), takes the lock, checks, drops the lock and sleeps only if no
        :meth:`wake_up_all` came since registering, so a wake-up between the check and the
        sleep is not lost. With ``timeout`` the limit applies to each sleep.
        """
        if not isinstance(lock, _ExclusiveLock):
            raise LockingError(f"wait_event_locked({self.name}): {lock!r} is not a Mutex or SpinLock")
        b = _backend
        task = b.current()
        might_sleep(f"wait_event_locked({self.name})")
        if lock.owner is task:
            raise DeadlockError(f"task {task.name} calls wait_event_locked({self.name}) holding {lock.name}")
        while True:
            b.point("prepare_to_wait", self)
            with b.critical():
                seen = self._wakes
            lock.lock()
            try:
                ok = condition()
            finally:
                lock.unlock()
            if ok:
                return True
            with b.critical():
                if not b.wait_until(self, self._woken_since(seen), "wait_event", timeout):
                    return False

    def _woken_since(self, seen: int) -> Callable[[], bool]:
        return lambda: self._wakes != seen

    def wake_up_all(self) -> None:
        """Wake every waiter so it re-checks its condition."""
        b = _backend
        with b.critical():
            self._wakes += 1
            b.wake(self)
        b.point("wake_up", self)

    def __repr__(self) -> str:
        return f"<WaitQueue {self.name}>"


class Completion:
    """``struct completion``: wait until ``complete``/``complete_all`` was called."""

    __slots__ = ("name", "done")

    _ALL = 1 << 62

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = 0
        _backend.created(self)

    def wait(self, timeout: float | None = None) -> bool:
        """``wait_for_completion``: consumes one ``complete``; False on timeout."""
        b = _backend
        task = b.current()
        if task.atomic_depth or task.non_block_depth:  # the message is built only for the report
            might_sleep(f"wait_for_completion({self.name})")
        b.point("wait_for_completion", self)
        with b.critical():
            if not b.wait_until(self, self.is_done, "wait_for_completion", timeout):
                return False
            if self.done != self._ALL:
                self.done -= 1
        return True

    def complete(self) -> None:
        """Let one waiter through."""
        self._signal(False)

    def complete_all(self) -> None:
        """Let every present and future waiter through (until :meth:`reinit`)."""
        self._signal(True)

    def reinit(self) -> None:
        """``reinit_completion``: back to not done."""
        b = _backend
        with b.critical():
            self.done = 0
        b.touch("reinit_completion", self)

    def is_done(self) -> bool:
        """``completion_done``."""
        return self.done > 0

    def _signal(self, everyone: bool) -> None:
        b = _backend
        with b.critical():
            if everyone:
                self.done = self._ALL
            elif self.done != self._ALL:
                self.done += 1
            b.wake(self)
        b.point("complete", self)


class Atomic:
    """``atomic_t``: each operation is one indivisible, schedulable step."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: int = 0) -> None:
        self.name = name
        self.value = value
        _backend.created(self)

    def read(self) -> int:
        """``atomic_read``."""
        _backend.point("atomic_read", self)
        return self.value

    def add_return(self, delta: int) -> int:
        """``atomic_add_return``: add and return the new value."""
        b = _backend
        b.point("atomic_add", self)
        with b.critical():
            self.value += delta
            return self.value

    def inc(self) -> int:
        """``atomic_inc_return``."""
        return self.add_return(1)

    def dec(self) -> int:
        """``atomic_dec_return``."""
        return self.add_return(-1)

    def inc_not_zero(self) -> bool:
        """``atomic_inc_not_zero``: increment unless the value is zero."""
        b = _backend
        b.point("atomic_inc_not_zero", self)
        with b.critical():
            if self.value == 0:
                return False
            self.value += 1
            return True

    def __repr__(self) -> str:
        return f"<Atomic {self.name}={self.value}>"


# -- freeing memory that holds a lock ----------------------------------------------------------


def check_no_locks_freed(obj: object, free_site: str) -> None:
    """Raise :class:`LockFreedError` if ``obj`` embeds a lock that is held or waited for.

    Models lockdep's ``debug_check_no_locks_freed``: freeing memory that contains a held lock
    (or one a task sleeps on) is a bug, reported with the free site and where the holder (or a
    waiter) is. Looks at ``obj``'s attributes (its ``__dict__`` and slots), as the kernel checks
    the freed memory range. Called before anything is freed, so nothing changes on an error.
    """
    b = _backend
    for name, value in attributes(obj):
        kind = type(value)  # not isinstance: a freed attribute raises on reading __class__
        if issubclass(kind, _ExclusiveLock):
            assert isinstance(value, _ExclusiveLock)
            holders = [value.owner] if value.owner is not None else []
        elif issubclass(kind, RWSemaphore):
            assert isinstance(value, RWSemaphore)
            holders = ([value.writer] if value.writer is not None else []) + list(value.readers)
        else:
            continue
        waiting = b.has_waiters(value)
        if not holders and not waiting:
            continue
        if holders:
            holder = holders[0]
            where = b.task_site(holder) or "?"
            state = f"held by task {holder.name} (at {where})"
        else:
            state = "waited for by a sleeping task"
        raise LockFreedError(
            f"{type(obj).__name__}.{name} ({_name(value)}) freed while {state}; freed at {free_site}",
            lock=value,
            free_site=free_site,
        )


_SLOT_NAMES: dict[type, tuple[str, ...]] = {}


def slot_names(kind: type) -> tuple[str, ...]:
    """The slots of ``kind`` and its bases that can hold a value (found once per class: every free asks)."""
    names = _SLOT_NAMES.get(kind)
    if names is None:
        found: list[str] = []
        for cls in kind.__mro__:
            slots = cls.__dict__.get("__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if isinstance(slot, str) and slot not in ("__dict__", "__weakref__"):
                    found.append(slot)
        names = _SLOT_NAMES[kind] = tuple(found)
    return names


def attributes(obj: object) -> Iterator[tuple[str, object]]:
    """``obj``'s attributes (its ``__dict__``, then its slots) as (name, value), for the checks at a free.

    Reads with ``object.__getattribute__`` only: an attribute (or ``obj``) may be a freed object,
    which raises on any other access.
    """
    try:
        state = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        state = None
    if isinstance(state, dict):
        for key, value in state.items():
            yield str(key), value
    for slot in slot_names(type(obj)):
        try:
            yield slot, object.__getattribute__(obj, slot)
        except AttributeError:
            continue
