"""Stand-ins for the core additions of issue 12 until the core ships them (removed at the merge of ``core-step``).

Only three small pieces, each with the agreed public name and behaviour:

* :class:`IntervalTree` (``mmu_notifier.itree.IntervalTree``): nodes with
  inclusive ``start``/``last``, duplicates allowed, overlap iteration in
  address order; here a sorted list, which is all a model of a few BOs needs;
* :func:`schedule_work` (``mmu_notifier.workqueue.schedule_work``): run a
  work item later on a kernel worker task, at most one pending instance;
* :func:`should_fail` (``kernel.faults.should_fail(site)``): fault injection
  at a named site; without the core's injector nothing ever fails.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar
from weakref import WeakKeyDictionary

from mmu_notifier import sync
from mmu_notifier.errors import InvalidArgumentError

N = TypeVar("N")

try:  # pragma: no cover - which branch runs depends on the installed core
    from mmu_notifier.itree import IntervalTree as _CoreTree
except ImportError:  # pragma: no cover
    _CoreTree = None


class _ListTree(Generic[N]):
    """A sorted list of ``[start, last]`` nodes (``rb_root_cached`` + ``interval_tree_*``)."""

    def __init__(self, name: str = "interval tree") -> None:
        self.name = name
        self._nodes: list[Any] = []

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[N]:
        return iter(list(self._nodes))

    def __contains__(self, node: object) -> bool:
        return any(n is node for n in self._nodes)

    def insert(self, node: N) -> None:
        """Insert ``node`` in address order (after equal starts)."""
        if node in self:
            raise InvalidArgumentError(f"{node!r} is already in {self.name}")
        start = node.start  # type: ignore[attr-defined]
        at = next((i for i, n in enumerate(self._nodes) if n.start > start), len(self._nodes))
        self._nodes.insert(at, node)

    def remove(self, node: N) -> None:
        """Remove ``node``; :class:`InvalidArgumentError` if it is not in the tree."""
        for i, n in enumerate(self._nodes):
            if n is node:
                del self._nodes[i]
                return
        raise InvalidArgumentError(f"{node!r} is not in {self.name}")

    def iter_overlap(self, start: int, last: int) -> Iterator[N]:
        """Nodes intersecting ``[start, last]``, in address order (a snapshot: removal while iterating is fine)."""
        return iter([n for n in self._nodes if n.start <= last and start <= n.last])

    def first_overlap(self, start: int, last: int) -> N | None:
        """The first node intersecting ``[start, last]``, or None."""
        return next(self.iter_overlap(start, last), None)


def interval_tree(name: str) -> Any:
    """A new empty interval tree (the core's when it has one)."""
    if _CoreTree is not None:  # pragma: no cover
        return _CoreTree(name)
    return _ListTree(name)


class Work:
    """``struct work_struct``: a function run later on a worker task."""

    def __init__(self, func: Callable[[], None], name: str = "work") -> None:
        self.func = func
        self.name = name
        self.pending = False


class _SystemWorkqueue:
    """``system_wq`` of one kernel: one worker task while work is queued."""

    def __init__(self, on_error: Callable[[BaseException], None]) -> None:
        self.lock = sync.SpinLock("system_wq.lock")
        self.on_error = on_error
        self.queue: deque[Work] = deque()
        self.running = False
        self.idle = sync.WaitQueue("system_wq.idle")

    def queue_work(self, work: Work) -> bool:
        with self.lock:
            if work.pending:
                return False
            work.pending = True
            self.queue.append(work)
            start = not self.running
            self.running = True
        if start:
            sync.backend().spawn_daemon("kworker", self._loop)
        return True

    def _loop(self) -> None:
        while True:
            with self.lock:
                if not self.queue:
                    self.running = False
                    break
                work = self.queue.popleft()
                work.pending = False
            try:
                work.func()
            except BaseException as error:  # the kernel would oops in the worker; record it as a bug
                self.on_error(error)
        self.idle.wake_up_all()

    def flush(self) -> None:
        self.idle.wait_event(lambda: not self.running and not self.queue)


_queues: WeakKeyDictionary[Any, _SystemWorkqueue] = WeakKeyDictionary()


def schedule_work(kernel: Any, work: Work) -> bool:
    """``schedule_work``: queue ``work`` on ``kernel``'s system workqueue; False if already pending."""
    try:  # pragma: no cover
        from mmu_notifier import workqueue as core_wq

        return bool(core_wq.schedule_work(work))  # type: ignore[attr-defined]
    except ImportError:
        pass
    wq = _queues.get(kernel)
    if wq is None:
        wq = _queues[kernel] = _SystemWorkqueue(kernel.record_bug)
    return wq.queue_work(work)


def flush_scheduled_work(kernel: Any) -> None:
    """``flush_scheduled_work``: wait until ``kernel``'s system workqueue is idle."""
    wq = _queues.get(kernel)
    if wq is not None:
        wq.flush()


def should_fail(kernel: Any, site: str) -> bool:
    """``kernel.faults.should_fail(site)`` when the core has fault injection; else never."""
    faults = getattr(kernel, "faults", None)
    return bool(faults is not None and faults.should_fail(site))
