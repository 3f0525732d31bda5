"""Work queues: the model of ``kernel/workqueue.c`` as drivers use it.

A :class:`Work` is a ``struct work_struct``: a function to run later on a kernel worker. A
:class:`Workqueue` runs queued items on worker tasks of the model (``Backend.spawn_daemon``: real
threads with the default backend, greenlets scheduled by the explorer under it), so a work item
races with everything else exactly as a kworker does.

Kernel behaviour modelled
    * ``queue_work``/``schedule_work`` queue an item only if it is not already *pending*; an item
      re-queued while it runs runs once more afterwards, never concurrently with itself (the
      workqueues are non-reentrant since 3.7).
    * A worker that sleeps does not hold up the rest of the queue: like the concurrency-managed
      pools, another worker is started while every worker is busy, up to ``max_active`` (1 is an
      ordered workqueue, ``alloc_ordered_workqueue``).
    * ``flush_work`` waits for the instance queued or running at the call; ``cancel_work_sync``
      takes a pending item off the queue and waits for a running one; both report whether there
      was something to wait for / cancel, as the kernel's return values do.
    * ``flush_workqueue`` waits for every item queued before the call; ``drain_workqueue`` waits
      until the queue is empty, re-queueing included; ``destroy_workqueue`` drains and then makes
      every later ``queue_work`` a bug.
    * Items run in process context (they may sleep). An exception escaping an item is handed to
      ``on_error`` (a kernel passes :meth:`~mmu_notifier.kernel.Kernel.record_bug`) and the worker
      goes on; without ``on_error`` it propagates out of the worker task.

Where it deliberately differs
    * No timers: a delayed work is queued at once. No CPU affinity, no WQ_MEM_RECLAIM rescuer.
    * Misuse the kernel catches with debugobjects or WARN (queueing on a destroyed workqueue,
      flushing from the item itself, freeing an item that is still queued) is a typed
      :class:`~mmu_notifier.errors.ModelBug` naming the item, raised before anything changes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from mmu_notifier import sync
from mmu_notifier.errors import ActiveObjectFreedError, DeadlockError, MisuseError

__all__ = [
    "Work",
    "Workqueue",
    "cancel_work_sync",
    "check_work_free",
    "flush_work",
    "queue_work",
    "schedule_work",
]


class Work:
    """``struct work_struct``: ``func`` runs on a worker each time the item is queued.

    ``pending`` is set from queueing until a worker takes the item off the queue, ``running``
    while a worker executes it. ``wq`` is the workqueue it was last queued on.
    """

    __slots__ = ("func", "name", "wq", "pending", "running", "_queued_count", "_done_count", "_runner")

    def __init__(self, func: Callable[[], None], name: str | None = None) -> None:
        if not callable(func):
            raise MisuseError(f"work {name or func!r}: func {func!r} is not callable")
        self.func = func
        self.name = name if name is not None else getattr(func, "__qualname__", repr(func))
        self.wq: Workqueue | None = None
        self.pending = False
        self.running = False
        self._queued_count = 0  # how many times the item was queued
        self._done_count = 0  # how many of those have finished running (or were cancelled)
        self._runner: sync.Task | None = None

    def __repr__(self) -> str:
        state = "pending" if self.pending else "running" if self.running else "idle"
        return f"<Work {self.name} {state}>"


class Workqueue:
    """A ``workqueue_struct`` with worker tasks started on demand and gone when it is idle.

    ``lock`` (the pool lock, a spinlock) guards the queue, the counters and every item's
    ``pending``/``running``; ``done`` is woken whenever an item finishes or is cancelled.
    """

    def __init__(
        self,
        name: str,
        *,
        max_active: int = 0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if max_active < 0:
            raise MisuseError(f"workqueue {name}: max_active must be >= 0 (0 = no limit), got {max_active}")
        self.name = name
        self.max_active = max_active
        self.on_error = on_error
        self.lock = sync.SpinLock(f"{name}.pool")
        self.done = sync.WaitQueue(f"{name}.done")
        self._queue: deque[Work] = deque()
        self._workers = 0  # live worker tasks
        self._busy = 0  # workers running an item
        self._queued_total = 0  # items ever queued
        self._finished_total = 0  # items ever finished or cancelled
        self._current: set[Work] = set()  # items running now
        self.destroyed = False

    def __repr__(self) -> str:
        return f"<Workqueue {self.name} queued={len(self._queue)} workers={self._workers}>"

    # -- queueing ------------------------------------------------------------------------------

    def queue_work(self, work: Work) -> bool:
        """``queue_work``: queue ``work`` unless it is pending; False if it was. Never sleeps."""
        if not isinstance(work, Work):
            raise MisuseError(f"queue_work on {self.name}: {work!r} is not a Work")
        spawn = False
        with self.lock:
            if self.destroyed:
                raise MisuseError(f"queue_work({work.name}) on workqueue {self.name}, which was destroyed")
            if work.pending:
                return False
            if work.wq is not None and work.wq is not self and work.running:
                raise MisuseError(
                    f"work {work.name} queued on {self.name} while it runs on {work.wq.name}"
                    " (the model keeps one workqueue per item at a time)"
                )
            work.pending = True
            work.wq = self
            work._queued_count += 1
            self._queue.append(work)
            self._queued_total += 1
            if self._workers == self._busy and (not self.max_active or self._workers < self.max_active):
                self._workers += 1
                spawn = True
        if spawn:
            sync.backend().spawn_daemon(f"kworker/{self.name}", self._worker)
        return True

    # -- waiting -------------------------------------------------------------------------------

    def flush(self) -> None:
        """``flush_workqueue``: wait until every item queued before the call has finished."""
        self._check_not_worker("flush_workqueue")
        with self.lock:
            target = self._queued_total
        self.done.wait_event(lambda: self._finished_total >= target)

    def drain(self) -> None:
        """``drain_workqueue``: wait until the queue is empty and idle, re-queued items included."""
        self._check_not_worker("drain_workqueue")
        self.done.wait_event(lambda: not self._queue and self._busy == 0)

    def destroy(self) -> None:
        """``destroy_workqueue``: drain, then refuse every later ``queue_work``."""
        self._check_not_worker("destroy_workqueue")
        if self.destroyed:
            raise MisuseError(f"destroy_workqueue({self.name}) twice")
        self.drain()
        with self.lock:
            self.destroyed = True

    def is_idle(self) -> bool:
        """Nothing queued and nothing running."""
        return not self._queue and self._busy == 0

    def _check_not_worker(self, what: str) -> None:
        task = sync.current()
        mine = [w for w in list(self._current) if w._runner is task]
        if mine:
            raise DeadlockError(f"{what}({self.name}) from its own work item {mine[0].name}")

    # -- the worker ----------------------------------------------------------------------------

    def _worker(self) -> None:
        """Body of one worker task: run runnable items until there is none, then exit."""
        while True:
            with self.lock:
                work = next((w for w in self._queue if not w.running), None)
                if work is None:
                    self._workers -= 1
                    break
                self._queue.remove(work)
                work.pending = False
                work.running = True
                work._runner = sync.current()
                self._busy += 1
                self._current.add(work)
            try:
                work.func()
            except BaseException as error:
                self._finish(work)
                # a work item's bug goes to on_error; Ctrl-C, exit or the explorer's abandon always propagate
                if self.on_error is None or not isinstance(error, Exception):
                    with self.lock:
                        self._workers -= 1
                    raise
                self.on_error(error)
                continue
            self._finish(work)

    def _finish(self, work: Work) -> None:
        with self.lock:
            work.running = False
            work._runner = None
            work._done_count += 1
            self._busy -= 1
            self._finished_total += 1
            self._current.discard(work)
        self.done.wake_up_all()


def queue_work(wq: Workqueue, work: Work) -> bool:
    """``queue_work(wq, work)``: False if ``work`` was already pending."""
    return wq.queue_work(work)


#: Returns the process-wide kernel; :mod:`mmu_notifier.kernel` installs its ``default_kernel``
#: here when it is imported (this module sits below it in the import graph).
default_kernel_hook: Callable[[], object] | None = None


def schedule_work(work: Work, kernel: object | None = None) -> bool:
    """``schedule_work``: queue on the system workqueue (``system_wq``) of ``kernel``.

    ``kernel`` (a :class:`~mmu_notifier.kernel.Kernel`) defaults to
    :func:`~mmu_notifier.kernel.default_kernel`; code running under the explorer passes the
    kernel of its scenario.
    """
    if kernel is None and default_kernel_hook is not None:
        kernel = default_kernel_hook()
    wq = getattr(kernel, "system_wq", None)
    if not isinstance(wq, Workqueue):
        raise MisuseError(f"schedule_work({work!r}): {kernel!r} is not a Kernel")
    return wq.queue_work(work)


def flush_work(work: Work) -> bool:
    """``flush_work``: wait for the instance pending or running now; False if there was none."""
    wq = work.wq
    if wq is None:
        return False
    task = sync.current()
    if work.running and work._runner is task:
        raise DeadlockError(f"flush_work({work.name}) from the work item itself")
    with wq.lock:
        if not work.pending and not work.running:
            return False
        target = work._queued_count
    wq.done.wait_event(lambda: work._done_count >= target)
    return True


def cancel_work_sync(work: Work) -> bool:
    """``cancel_work_sync``: take ``work`` off its queue and wait for a running instance.

    True if the item was pending (and is now cancelled). On return the item is neither pending
    nor running, unless it re-queued itself from its own function meanwhile (as in the kernel,
    the caller must stop that first).
    """
    wq = work.wq
    if wq is None:
        return False
    task = sync.current()
    if work.running and work._runner is task:
        raise DeadlockError(f"cancel_work_sync({work.name}) from the work item itself")
    woke = False
    with wq.lock:
        was_pending = work.pending
        if was_pending:
            wq._queue.remove(work)
            work.pending = False
            work._done_count += 1
            wq._finished_total += 1
            woke = True
    if woke:
        wq.done.wake_up_all()
    wq.done.wait_event(lambda: not work.running)
    return was_pending


def check_work_free(obj: object, site: str | None = None) -> None:
    """Raise :class:`ActiveObjectFreedError` if freeing ``obj`` (at ``site``) would free a queued or running work item.

    ``obj`` is a :class:`Work` or an object holding one in an attribute (the kernel embeds the
    ``work_struct``). Models debugobjects' "ODEBUG: free active object type: work_struct".
    An item's own function may free it (``process_one_work`` deactivates the item before
    calling it and never touches it afterwards: workqueue.c says this is permitted); any
    other task freeing a running item is reported.
    """
    task = None
    for work in _works_of(obj):
        if work.running and not work.pending:
            task = task if task is not None else sync.current()
            if work._runner is task:
                continue
        if work.pending or work.running:
            state = "queued" if work.pending else "running"
            where = work.wq.name if work.wq is not None else "?"
            owner = "" if work is obj else f" (inside {type(obj).__name__})"
            raise ActiveObjectFreedError(
                f"work {work.name}{owner} freed while {state} on workqueue {where}", free_site=site
            )


def _works_of(obj: object) -> list[Work]:
    # type() and object.__getattribute__ only: an attribute may be a freed (poisoned) object,
    # which raises on any attribute access, __class__ included (what isinstance would read)
    kind = type(obj)
    if issubclass(kind, Work):
        return [obj]  # type: ignore[list-item]
    found: list[Work] = []
    for _, value in sync.attributes(obj):
        if issubclass(type(value), Work):
            found.append(value)  # type: ignore[arg-type]
    return found


