"""One SRCU domain: sleepable read sections, grace periods and deferred callbacks.

Models ``kernel/rcu/srcutree.c`` as the notifier core uses it (``srcu_read_lock``,
``srcu_read_unlock``, ``synchronize_srcu``, ``call_srcu``, ``srcu_barrier``).

Grace periods are tracked with tickets: every reader takes the next ticket when
it enters, and a grace period that starts when the ticket counter reads ``t``
ends once no reader holding a ticket below ``t`` is left. Readers that enter
later never hold it up, as in the kernel.

Callbacks queued with :meth:`Srcu.call` run on a background task (the model of
SRCU's callback workqueue) in atomic context, so a callback that sleeps is
reported, as the kernel's ``free_notifier`` contract demands. They run in the
order they were queued. An exception from a callback is handed to ``on_error``
(the kernel records it as a bug) and the worker goes on with the next one;
without ``on_error`` it propagates out of the worker task. What stops the
program rather than reports a bug (``KeyboardInterrupt``, ``SystemExit``, the
explorer abandoning a thread: any ``BaseException`` that is no ``Exception``)
always propagates.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mmu_notifier import sync
from mmu_notifier.errors import DeadlockError, LockingError


class _GracePeriod:
    """What the tasks waiting for one grace period are woken by (a wake channel: ``Backend.wait_until``).

    Not a kernel object: the kernel's waiters sleep on their own completions, which the
    grace-period machinery completes when their grace period ends. The model waits on the SRCU
    domain (what reports name) and is woken through this channel, so the end of a grace period
    wakes just its own waiters, not every task waiting for a later one.
    """

    __slots__ = ("srcu", "target")

    def __init__(self, srcu: Srcu, target: int) -> None:
        self.srcu = srcu
        self.target = target

    def __repr__(self) -> str:
        return f"<grace period of {self.srcu.name} before ticket {self.target}>"


class Srcu:
    """An SRCU domain."""

    def __init__(self, name: str = "srcu", on_error: Callable[[BaseException], None] | None = None) -> None:
        self.name = name
        self.on_error = on_error
        self._next_ticket = 0
        self._readers: dict[int, sync.Task] = {}
        #: tickets of open read sections, a min-heap with lazy deletion (the oldest reader in O(log n))
        self._tickets: list[int] = []
        self._callbacks: deque[tuple[int, Callable[[], None]]] = deque()
        #: the grace periods waited for now: targets of ``synchronize`` callers and of the callback
        #: worker waiting for its head, ascending, with a count and a wake channel per target (see
        #: :meth:`read_unlock`)
        self._awaited: list[int] = []
        self._awaited_count: dict[int, int] = {}
        self._channels: dict[int, _GracePeriod] = {}
        #: the latest awaited target whose channel was woken: those up to it are over for good, and a
        #: target awaited later is above every open reader's ticket, so each channel is woken once
        self._woken_through = -1
        self._queued = 0
        self._completed = 0
        self._worker_running = False
        sync.backend().created(self)

    # -- readers ---------------------------------------------------------
    def read_lock(self) -> int:
        """Enter a read section; returns the index to hand to :meth:`read_unlock`."""
        b = sync.backend()
        b.point("srcu_read_lock", self)
        task = b.current()
        with b.critical():
            ticket = self._next_ticket
            self._next_ticket = ticket + 1
            self._readers[ticket] = task
            heapq.heappush(self._tickets, ticket)
        task.srcu_depth[self] = task.srcu_depth.get(self, 0) + 1
        return ticket

    def read_unlock(self, index: int) -> None:
        """Leave the read section entered with ``index``."""
        b = sync.backend()
        task = b.current()
        with b.critical():
            if self._readers.get(index) is not task:
                raise LockingError(f"task {task.name} leaves {self.name} read section {index} it did not enter")
            del self._readers[index]
            tickets = self._tickets
            if tickets[0] == index:
                # The oldest reader left: prune the heap (amortised O(log n)).
                while tickets and tickets[0] not in self._readers:
                    heapq.heappop(tickets)
            # Only the oldest reader's leave can end a grace period, so a waiter is woken when its own
            # grace period is over, through that grace period's channel: not at every leave, and not
            # the waiters of later ones (with many waiters, rechecking each at every leave made a long
            # run quadratic; on OS threads it was a herd of futex wakes). A backend that orders a
            # waiter after the step that woke it (the explorer's partial-order reduction, its retried
            # waits) needs the same wakes in every order: every leave wakes every waiter.
            awaited = self._awaited
            if b.eager_wakes:
                b.wake(self)
            elif awaited and awaited[-1] > self._woken_through:
                first = bisect_right(awaited, self._woken_through)
                over = bisect_right(awaited, tickets[0]) if tickets else len(awaited)
                if over > first:
                    channels = self._channels
                    for target in awaited[first:over]:
                        b.wake(channels[target])
                    self._woken_through = awaited[over - 1]
        depth = task.srcu_depth[self] - 1
        if depth:
            task.srcu_depth[self] = depth
        else:
            del task.srcu_depth[self]
        b.point("srcu_read_unlock", self)

    @contextmanager
    def read_section(self) -> Iterator[None]:
        """``with srcu.read_section():`` brackets a read section."""
        index = self.read_lock()
        try:
            yield
        finally:
            self.read_unlock(index)

    def readers(self) -> int:
        """How many read sections are open now."""
        return len(self._readers)

    # -- grace periods ---------------------------------------------------
    def synchronize(self) -> None:
        """``synchronize_srcu``: wait until every reader present now has left."""
        b = sync.backend()
        task = b.current()
        if task.atomic_depth or task.non_block_depth:  # the message is built only for the report
            sync.might_sleep(f"synchronize_srcu({self.name})")
        if task.srcu_depth.get(self):
            raise DeadlockError(f"task {task.name} calls synchronize_srcu({self.name}) inside its own read section")
        b.point("synchronize_srcu", self)
        with b.critical():
            target = self._next_ticket
            channel = self._await(target, b)
            try:
                b.wait_until(self, lambda: self._grace_period_over(target), "synchronize_srcu", channel=channel)
            finally:
                self._awaited_done(target)

    def call(self, callback: Callable[[], None]) -> None:
        """``call_srcu``: run ``callback`` after every reader present now has left.

        Never sleeps and never runs the callback before returning.
        """
        b = sync.backend()
        b.point("call_srcu", self)
        with b.critical():
            self._callbacks.append((self._next_ticket, callback))
            self._queued += 1
            start_worker = not self._worker_running
            self._worker_running = True
        if start_worker:
            b.spawn_daemon(f"{self.name}-callbacks", self._run_callbacks)

    def barrier(self) -> None:
        """``srcu_barrier``: wait until every callback queued before the call has run."""
        b = sync.backend()
        task = b.current()
        if task.atomic_depth or task.non_block_depth:  # the message is built only for the report
            sync.might_sleep(f"srcu_barrier({self.name})")
        if task.srcu_depth.get(self):
            raise DeadlockError(f"task {task.name} calls srcu_barrier({self.name}) inside its own read section")
        b.point("srcu_barrier", self)
        with b.critical():
            target = self._queued
            b.wait_until(self, lambda: self._completed >= target, "srcu_barrier")

    def pending_callbacks(self) -> int:
        """Callbacks queued and not yet run."""
        return self._queued - self._completed

    def _grace_period_over(self, ticket: int) -> bool:
        tickets = self._tickets  # pruned at every read_unlock: its head is the oldest open reader
        return not tickets or tickets[0] >= ticket

    def _await(self, target: int, b: sync.Backend) -> _GracePeriod | None:
        """A task is about to wait for the grace period that ends when no ticket below ``target`` is left.

        Returns the channel to wait with (``None``, the domain itself, on a backend that wants every
        leave to wake every waiter).
        """
        count = self._awaited_count.get(target, 0)
        if not count:
            insort(self._awaited, target)  # nearly always the newest: an append
            self._channels[target] = _GracePeriod(self, target)
        self._awaited_count[target] = count + 1
        return None if b.eager_wakes else self._channels[target]

    def _awaited_done(self, target: int) -> None:
        """That task stopped waiting (its grace period ended, or it was abandoned)."""
        count = self._awaited_count[target] - 1
        if count:
            self._awaited_count[target] = count
            return
        del self._awaited_count[target]
        del self._channels[target]
        awaited = self._awaited
        del awaited[bisect_left(awaited, target)]

    def _head_ready(self) -> bool:
        return self._grace_period_over(self._callbacks[0][0])

    def _run_callbacks(self) -> None:
        """Body of the callback worker: runs until the queue is empty, then exits."""
        b = sync.backend()
        while True:
            with b.critical():
                if not self._callbacks:
                    self._worker_running = False
                    return
                head = self._callbacks[0][0]
                channel = self._await(head, b)
                try:
                    b.wait_until(self, self._head_ready, "srcu_gp", channel=channel)
                finally:
                    self._awaited_done(head)
                _, callback = self._callbacks.popleft()
            try:
                with sync.atomic_context():
                    callback()
            except BaseException as error:
                # a callback's bug goes to on_error; what stops the program (Ctrl-C, exit, the explorer
                # abandoning the thread) is never a callback's bug and always propagates
                if self.on_error is None or not isinstance(error, Exception):
                    with b.critical():
                        self._completed += 1
                        self._worker_running = False
                        b.wake(self)
                    b.touch("srcu_callback_done", self)
                    raise
                self.on_error(error)
            with b.critical():
                self._completed += 1
                b.wake(self)
            b.touch("srcu_callback_done", self)
