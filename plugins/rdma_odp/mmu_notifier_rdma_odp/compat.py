"""Stand-ins for two core additions of issue 12 that this branch does not have yet.

``mmu_notifier.itree.IntervalTree`` and ``mmu_notifier.workqueue`` are being
added to the core (branch ``core-step``); until they land the plugin uses these
small equivalents with the agreed API. Once the core has them, the imports
below pick the core's and this module is only a re-export.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from mmu_notifier import InvalidArgumentError, sync


class _Node(Protocol):
    start: int
    last: int


N = TypeVar("N", bound=_Node)


class _IntervalTree(Generic[N]):
    """An interval tree of nodes with inclusive ``[start, last]``; duplicates allowed.

    A sorted list stands in for the kernel's augmented rbtree: same queries
    (overlap walk in address order, first overlap), not the same cost.
    """

    def __init__(self) -> None:
        self._nodes: list[N] = []

    def insert(self, node: N) -> None:
        """``interval_tree_insert``."""
        index = 0
        while index < len(self._nodes) and (self._nodes[index].start, self._nodes[index].last) <= (
            node.start,
            node.last,
        ):
            index += 1
        self._nodes.insert(index, node)

    def remove(self, node: N) -> None:
        """``interval_tree_remove``; a node not in the tree is an error naming it."""
        for index, present in enumerate(self._nodes):
            if present is node:
                del self._nodes[index]
                return
        raise InvalidArgumentError(f"{node!r} is not in the interval tree")

    def iter_overlap(self, start: int, last: int) -> Iterator[N]:
        """Nodes overlapping ``[start, last]`` in address order (a snapshot)."""
        return iter([n for n in self._nodes if n.start <= last and start <= n.last])

    def first_overlap(self, start: int, last: int) -> N | None:
        """The first node overlapping ``[start, last]``."""
        return next(self.iter_overlap(start, last), None)

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[N]:
        return iter(list(self._nodes))

    def __contains__(self, node: object) -> bool:
        return any(n is node for n in self._nodes)


class _Work:
    """``struct work_struct``: a function run once per queueing by a kernel worker."""

    def __init__(self, func: Callable[[], None], name: str = "work") -> None:
        self.func = func
        self.name = name
        self.pending = False
        self.running = False


class _Workqueue:
    """A workqueue with one worker thread of the model, started when work arrives."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = sync.SpinLock(f"{name}.lock")
        self.done = sync.WaitQueue(f"{name}.done")
        self.queue: deque[_Work] = deque()
        self.worker = False
        self.errors: list[BaseException] = []

    def queue_work(self, work: _Work) -> bool:
        with self.lock:
            if work.pending:
                return False
            work.pending = True
            self.queue.append(work)
            start = not self.worker
            self.worker = True
        if start:
            sync.backend().spawn_daemon(self.name, self._loop)
        return True

    def flush_work(self, work: _Work) -> bool:
        busy = work.pending or work.running
        self.done.wait_event(lambda: not work.pending and not work.running)
        return busy

    def flush(self) -> None:
        self.done.wait_event(lambda: not self.queue and not self.worker)

    def _loop(self) -> None:
        while True:
            with self.lock:
                if not self.queue:
                    self.worker = False
                    break
                work = self.queue.popleft()
                work.pending = False
                work.running = True
            try:
                work.func()
            except BaseException as error:  # a bug in a work item is recorded, the worker goes on
                self.errors.append(error)
            with self.lock:
                work.running = False
            self.done.wake_up_all()
        self.done.wake_up_all()


IntervalTree: Any
Work: Any
Workqueue: Any
try:  # the core's, once issue 12 landed
    from mmu_notifier.itree import IntervalTree
except ImportError:  # pragma: no cover - until core-step is merged
    IntervalTree = _IntervalTree
try:
    from mmu_notifier.workqueue import Work, Workqueue, queue_work
except ImportError:  # pragma: no cover - until core-step is merged
    Work, Workqueue = _Work, _Workqueue

    def queue_work(wq: Any, work: Any) -> bool:
        """``queue_work``: False if ``work`` was already pending."""
        return bool(wq.queue_work(work))


__all__ = ["IntervalTree", "Work", "Workqueue", "queue_work"]
