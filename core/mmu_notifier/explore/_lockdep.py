"""The lock-order graph: lockdep's prediction of ABBA deadlocks.

Models ``kernel/locking/lockdep.c`` in its simplest form: each lock's ``name``
is its *class*; whenever a task acquires a lock of class B while holding one of
class A, the edge A -> B is recorded with the step and thread that made it.
A new edge that closes a cycle is an inversion: some interleaving of the same
code can deadlock, even though this run did not. Same-class nesting (two
``mmap_lock`` of different mms) is not an edge, as with lockdep's nesting
annotations.
"""

from __future__ import annotations

import itertools

from mmu_notifier.explore._findings import Kind, Problem, RawStack, format_stack

#: Scheduling-point ops that acquire a lock and may wait for it (trylocks never wait).
ACQUIRE_OPS = frozenset({"mutex_lock", "spin_lock", "down_read", "down_write"})


_NO_ACQUIRED: dict[tuple[int, int], tuple[int, RawStack]] = {}


def _class_of(lock: object) -> str:
    """The lock's lockdep class: its ``lock_class`` when it names one (every instance of a per-object
    lock shares the class, as a kernel lock initialised at one site does), else its name."""
    lock_class = getattr(lock, "lock_class", None)
    return str(lock_class) if lock_class else str(getattr(lock, "name", type(lock).__name__))


def _stack_text(stack: RawStack) -> str:
    return " <- ".join(format_stack(stack)) or "?"


#: what an edge keeps: the thread and step that made it, the held class and where that thread took it
#: (step and raw stack, or None if not known), the new class and the raw stack where it is taken
_Edge = tuple[str, int, str, "tuple[int, RawStack] | None", str, RawStack]


def _edge_text(edge: _Edge) -> str:
    """An edge as lockdep prints it: who made it, where the held lock and the new one were taken."""
    thread, step, source, first, target, stack = edge
    held_at = f"{source} taken at step {first[0]} at {_stack_text(first[1])}" if first else f"{source} held"
    return f"{thread} at step {step}: {held_at}; then {target} taken at {_stack_text(stack)}"


class LockOrder:
    """The per-execution lock-class graph and the first cycle it closed.

    Each edge keeps what lockdep prints for it: the thread and step that made
    it, where the held lock was taken and where the new one was. The stacks
    stay raw until a cycle is reported (most executions report none, and an
    edge is made at nearly every nested acquisition).
    """

    __slots__ = ("edges", "cycle", "_after")

    def __init__(self) -> None:
        #: (held class, acquired class) -> the raw facts of the acquisition that made the edge
        self.edges: dict[tuple[str, str], _Edge] = {}
        self.cycle: Problem | None = None
        #: class -> the classes taken after it, in the order the edges were made (what ``_path`` walks)
        self._after: dict[str, list[str]] = {}

    def acquire(
        self,
        held: list[object],
        lock: object,
        thread: str,
        step: int,
        stack: RawStack = (),
        acquired: dict[tuple[int, int], tuple[int, RawStack]] = _NO_ACQUIRED,
        thread_idx: int = -1,
    ) -> None:
        """Record the order of ``lock`` after every lock in ``held`` (``stack``: where ``lock`` is taken).

        ``acquired`` maps (lock id, thread index) to the step and stack of that
        thread's acquisition of a held lock, so an edge names both sites.
        """
        target = _class_of(lock)
        for h in held:
            source = _class_of(h)
            if source == target or (source, target) in self.edges:
                continue
            self.edges[(source, target)] = (thread, step, source, acquired.get((id(h), thread_idx)), target, stack)
            self._after.setdefault(source, []).append(target)
            if self.cycle is None:
                path = self._path(target, source)
                if path:
                    self.cycle = self._report([*path, target], thread, step)

    def _path(self, start: str, goal: str) -> list[str]:
        """Classes from ``start`` to ``goal`` along recorded edges (empty if unreachable)."""
        stack: list[list[str]] = [[start]]
        seen = {start}
        while stack:
            path = stack.pop()
            if path[-1] == goal:
                return path
            for b in self._after.get(path[-1], ()):  # the edges out of it, in the order they were made
                if b not in seen:
                    seen.add(b)
                    stack.append([*path, b])
        return []

    def _report(self, cycle: list[str], thread: str, step: int) -> Problem:
        details = {
            f"order {a} -> {b}": f"by {_edge_text(self.edges[(a, b)])}" for a, b in itertools.pairwise(cycle)
        }
        message = "lock classes taken in a cycle: " + " -> ".join(cycle)
        return Problem(Kind.LOCK_ORDER, message, thread, step, details, predictive=True)
