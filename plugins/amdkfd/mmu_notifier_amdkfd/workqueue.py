"""The workqueues amdkfd queues its process works on: ``kfd_process_wq``, ``kfd_restore_wq`` and ``system_wq``.

Models the part of ``kernel/workqueue.c`` the driver relies on: ``queue_work``
(at most once while pending), ``cancel_delayed_work_sync``,
``flush_delayed_work`` and ``flush_workqueue``. Deliberately apart from the
rest of the driver: the model has no timers (a delayed work is queued at
once), and the driver's queues are meant to move onto the core's workqueue
(``mmu_notifier.workqueue``) once that exists; only this module changes then.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mmu_notifier import sync


@dataclass(eq=False)
class Work:
    """A (delayed) work item. The model has no timers: a delayed work is queued at once."""

    name: str
    fn: Callable[[], None]
    pending: bool = False
    running: bool = False


class Workqueue:
    """A workqueue with one worker task, started when work arrives and gone when the queue is empty.

    Locking: ``lock`` guards the queue and the items' ``pending``/``running``
    flags; ``done`` is woken whenever an item finishes. An exception escaping
    an item is handed to ``on_error`` (the kernel records it as a bug) and the
    worker goes on, as the core's SRCU callback worker does.
    """

    def __init__(self, name: str, on_error: Callable[[BaseException], None]) -> None:
        self.name = name
        self.on_error = on_error
        self.lock = sync.SpinLock(f"{name}.lock")
        self.done = sync.WaitQueue(name)
        self._queue: deque[Work] = deque()
        self._worker = False
        self._running: Work | None = None

    def queue_work(self, work: Work) -> bool:
        """``queue_work``: False if ``work`` was already pending. Never sleeps."""
        with self.lock:
            if work.pending:
                return False
            work.pending = True
            self._queue.append(work)
            start = not self._worker
            self._worker = True
        if start:
            sync.backend().spawn_daemon(self.name, self._work_loop)
        return True

    def cancel_work_sync(self, work: Work) -> bool:
        """``cancel_delayed_work_sync``: dequeue ``work`` and wait for a running instance; True if it was pending."""
        with self.lock:
            pending = work.pending
            if pending:
                work.pending = False
                self._queue.remove(work)
        self.done.wait_event(lambda: not work.running)
        return pending

    def flush_work(self, work: Work) -> None:
        """``flush_delayed_work``: wait until ``work`` is neither pending nor running."""
        self.done.wait_event(lambda: not work.pending and not work.running)

    def flush(self) -> None:
        """``flush_workqueue`` (and the drain of ``destroy_workqueue``): wait until the queue is idle."""
        self.done.wait_event(lambda: not self._queue and self._running is None)

    def _work_loop(self) -> None:
        while True:
            with self.lock:
                if not self._queue:
                    self._worker = False
                    break
                work = self._queue.popleft()
                work.pending = False
                work.running = True
                self._running = work
            try:
                work.fn()
            except BaseException as error:
                self.on_error(error)
            with self.lock:
                work.running = False
                self._running = None
            self.done.wake_up_all()
        self.done.wake_up_all()
