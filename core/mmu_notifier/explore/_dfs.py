"""Bounded exhaustive search: depth-first over decisions, preemption bound k, sleep sets.

Stateless model checking in the style of CHESS (Musuvathi & Qadeer, PLDI 2007)
with Godefroid's sleep sets as the partial-order reduction. Each execution
replays a prefix of recorded decisions and then takes, at every new decision,
the first allowed thread (the running one first, so the first schedule has no
preemption). After the execution the search backtracks to the deepest decision
with an untried allowed alternative.

*Preemption bound*: switching away from a thread that could have gone on
counts as a preemption; choices that would exceed ``k`` are not tried
(switches at a block or an exit are free).

*Sleep sets*: after the subtree of choice ``t`` at a node is explored, ``t``
sleeps in the subtrees of the node's later choices until some step dependent
on ``t``'s pending step runs; a sleeping thread is never chosen, and an
execution whose every runnable thread sleeps is abandoned (it is equivalent to
one already explored).

*Independence* is judged on the (op, resource) labels of the two steps, under
the model's convention that a step touches shared state only through the
resource of the scheduling point it starts at (and a thread's code before its
first point only its own state). So steps on different resources commute, as
do two reads of one atomic, and a thread's first step commutes with
everything. Two exceptions follow the kernel's RCU discipline: an SRCU
read-lock step snapshots lists that writers change inside lock critical
sections, so it depends on every lock acquisition; and ``yield`` (the marker
for unsynchronised shared data) and a list-walk element (the walker then
reads the element, which may be freed in any step, and calls its driver)
depend on everything. The reduction is exact for the explored bound except
for the known interplay of sleep sets with preemption bounding (Coons et al.,
OOPSLA 2013): an interleaving may be pruned in favour of an equivalent one
that needs more preemptions than the bound allows.
"""

from __future__ import annotations

from mmu_notifier.explore._lockdep import ACQUIRE_OPS
from mmu_notifier.explore._scheduler import Execution, ModelThread, Outcome
from mmu_notifier.explore._strategies import PrefixSearch

#: A thread's first step: its prologue touches only its own state.
LOCAL_OPS = frozenset({"start"})
#: Ops whose step may touch state no (op, resource) label names.
GLOBAL_OPS = frozenset({"yield", "walk"})
#: Ops that only read their resource.
READ_OPS = frozenset({"atomic_read"})
#: Ops that snapshot lock-protected lists without the lock (RCU readers).
RCU_READ_OPS = frozenset({"srcu_read_lock"})
#: Ops that enter a critical section, where RCU-visible data is written.
WRITER_OPS = ACQUIRE_OPS | {"mutex_trylock", "spin_trylock", "down_read_trylock", "down_write_trylock"}


def dependent(a_op: str, a_res: object, b_op: str, b_res: object) -> bool:
    """True unless the two steps commute (see the module docstring for the rules)."""
    if a_op in LOCAL_OPS or b_op in LOCAL_OPS:
        return False
    if a_res is None or b_res is None or a_op in GLOBAL_OPS or b_op in GLOBAL_OPS:
        return True
    if a_res is b_res:
        return not (a_op in READ_OPS and b_op in READ_OPS)
    if a_op in RCU_READ_OPS:
        return b_op in WRITER_OPS
    if b_op in RCU_READ_OPS:
        return a_op in WRITER_OPS
    return False


class _Node:
    """One decision of the search tree."""

    __slots__ = ("cands", "current", "preemptions", "sleep", "done", "chosen")

    def __init__(self, cands: tuple[int, ...], current: int, preemptions: int, sleep: frozenset[int]) -> None:
        self.cands = cands
        #: the thread that reached the point, if it could go on (-1 otherwise)
        self.current = current
        self.preemptions = preemptions
        self.sleep = sleep
        self.done: set[int] = set()
        self.chosen = -1

    def next_choice(self, bound: int) -> int:
        """The first allowed untried choice (running thread first), or -1."""
        order = self.cands
        if self.current >= 0:
            order = (self.current, *(c for c in self.cands if c != self.current))
        for c in order:
            if c in self.done or c in self.sleep:
                continue
            if self.current >= 0 and c != self.current and self.preemptions >= bound:
                continue
            return c
        return -1


class BoundedDFS(PrefixSearch[_Node]):
    """Exhaustive search up to ``preemptions`` preemptions, reduced with sleep sets."""

    name = "dfs"
    #: decisions above this depth are fixed: a shard of a parallel search (``explore --jobs``) seeds the
    #: stack with a prefix of nodes and explores only the subtree below it (0: the whole tree)
    floor = 0

    def __init__(self, preemptions: int = 2, reduction: bool = True) -> None:
        if preemptions < 0:
            raise ValueError(f"preemption bound must be >= 0, got {preemptions}")
        super().__init__()
        self.bound = preemptions
        self.reduction = reduction
        self._depth = 0
        self._preempt = 0
        self._sleep: set[int] = set()
        self._seen = 0

    def start(self) -> bool:
        self._depth = 0
        self._preempt = 0
        self._sleep = set()
        self._seen = 0
        return not self.exhausted and self.nondeterminism is None

    def choose(
        self, cands: list[ModelThread], current: ModelThread | None, ex: Execution
    ) -> ModelThread | None:
        if self.reduction:
            self._wake_sleepers(ex)
        ids = tuple(t.idx for t in cands)
        depth = self._depth
        node = self._decide(depth, ids, lambda: self._new_node(ids, current))
        if node is None:
            return None
        self._depth = depth + 1
        chosen = node.chosen
        if node.current >= 0 and chosen != node.current:
            self._preempt = node.preemptions + 1
        if self.reduction:
            self._sleep = set(node.sleep) | (node.done - {chosen})
        return self._thread(cands, chosen)

    def _new_node(self, ids: tuple[int, ...], current: ModelThread | None) -> _Node | None:
        """A decision past the replayed prefix: the first allowed thread (the running one first)."""
        cur = current.idx if current is not None and current.idx in ids else -1
        node = _Node(ids, cur, self._preempt, frozenset(self._sleep))
        node.chosen = node.next_choice(self.bound)
        if node.chosen < 0:
            return None
        self._stack.append(node)
        return node

    def _wake_sleepers(self, ex: Execution) -> None:
        """Drop from the sleep set every thread a step since the last decision depended on."""
        sleep = self._sleep
        trace = ex.trace
        if sleep:
            threads = ex.threads
            for k in range(self._seen, len(trace)):
                idx, op, res = trace[k]
                for u in list(sleep):
                    t = threads[u]
                    if u == idx or dependent(op, res, t.op, t.res):
                        sleep.discard(u)
        self._seen = len(trace)

    def finish(self, outcome: Outcome) -> None:
        stack = self._stack
        if self._depth < len(stack) and self.nondeterminism is None:
            self.nondeterminism = (
                f"an execution ended after {self._depth} decisions where an earlier one with the same "
                f"choices went on to {len(stack)}: the scenario is not deterministic"
            )
        if outcome.status == "aborted":
            self.pruned += 1
        while len(stack) > self.floor:
            node = stack[-1]
            node.done.add(node.chosen)
            alt = node.next_choice(self.bound)
            if alt >= 0:
                node.chosen = alt
                return
            stack.pop()
        self.exhausted = True

    def describe(self) -> str:
        reduction = "sleep sets" if self.reduction else "no reduction"
        return f"dfs (preemption bound {self.bound}, {reduction})"


class Exhaustive(BoundedDFS):
    """Every interleaving, without reduction or bound, each execution run past failures to its end.

    The reference the partial-order reduction is tested against: it explores
    every schedule, so it finds every outcome (slowly).
    """

    name = "exhaustive"
    run_past_failures = True

    def __init__(self) -> None:
        super().__init__(preemptions=1 << 30, reduction=False)

    def describe(self) -> str:
        return "exhaustive (every interleaving, no reduction)"
