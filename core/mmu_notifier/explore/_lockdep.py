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

from mmu_notifier.explore._findings import Kind, Problem

#: Scheduling-point ops that acquire a lock and may wait for it (trylocks never wait).
ACQUIRE_OPS = frozenset({"mutex_lock", "spin_lock", "down_read", "down_write"})


class LockOrder:
    """The per-execution lock-class graph and the first cycle it closed."""

    __slots__ = ("edges", "cycle")

    def __init__(self) -> None:
        #: (held class, acquired class) -> "thread at step N"
        self.edges: dict[tuple[str, str], str] = {}
        self.cycle: Problem | None = None

    def acquire(self, held: list[object], lock: object, thread: str, step: int) -> None:
        """Record the order of ``lock`` after every lock in ``held``."""
        target: str = getattr(lock, "name", type(lock).__name__)
        for h in held:
            source: str = getattr(h, "name", type(h).__name__)
            if source == target or (source, target) in self.edges:
                continue
            self.edges[(source, target)] = f"{thread} at step {step}"
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
            for a, b in self.edges:
                if a == path[-1] and b not in seen:
                    seen.add(b)
                    stack.append([*path, b])
        return []

    def _report(self, cycle: list[str], thread: str, step: int) -> Problem:
        details = {f"{a} -> {b}": f"taken by {self.edges[(a, b)]}" for a, b in itertools.pairwise(cycle)}
        message = "lock classes taken in a cycle: " + " -> ".join(cycle)
        return Problem(Kind.LOCK_ORDER, message, thread, step, details, predictive=True)
