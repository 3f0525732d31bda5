"""How to pick the next step: seeded random walk, PCT, and forced replay.

A strategy drives many executions. Per execution the explorer calls
:meth:`Strategy.start` (False: nothing left to explore), then the scheduler
calls :meth:`Strategy.choose` at every decision, then :meth:`Strategy.finish`
with the outcome. The systematic strategies live in :mod:`._dfs` (bounded DFS
with sleep sets, the exhaustive reference) and :mod:`._dpor` (optimal DPOR).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from mmu_notifier.explore._scheduler import Execution, ModelThread, Outcome


class Strategy:
    """Base: a chooser with a per-execution life cycle."""

    name = "abstract"
    #: consult :meth:`choose` even when only one thread can run
    always = False
    #: nothing is left to explore (a systematic search finished)
    exhausted = False
    #: executions the strategy abandoned as equivalent to explored ones
    pruned = 0
    #: why the scenario was found not to be deterministic, if it was
    nondeterminism: str | None = None
    #: scheduler modes a strategy may ask for (see :mod:`._scheduler`): a woken waiter's retry is a
    #: step; a wait that changes nothing is not offered until it gets through; a failing thread is
    #: retired and the others run on; every step's accesses are recorded
    retry_steps = False
    lazy_waits = False
    run_past_failures = False
    records = False

    def start(self) -> bool:
        """Prepare the next execution; False when the strategy has nothing left."""
        return True

    def choose(
        self, cands: list[ModelThread], current: ModelThread | None, ex: Execution
    ) -> ModelThread | None:
        """The thread to run next (``None`` abandons the execution)."""
        raise NotImplementedError

    def finish(self, outcome: Outcome) -> None:
        """Learn from the execution that just ended."""

    def describe(self) -> str:
        """The strategy and its parameters, for reports."""
        return self.name


class Decision(Protocol):
    """What a systematic search records per decision: the threads offered and the one chosen."""

    cands: tuple[int, ...]
    chosen: int


D = TypeVar("D", bound=Decision)


class PrefixSearch(Strategy, Generic[D]):
    """Base of the systematic searches (:mod:`._dfs`, :mod:`._dpor`): a stack of decisions, replayed as a prefix.

    Every execution of such a search first replays the decisions recorded on
    the stack (the path to the branch to explore next), then makes new ones.
    The replay is shared: at each decision within the prefix the offered
    threads must be the recorded ones (else the scenario is not deterministic
    and the search stops), and the recorded choice is taken again.
    """

    def __init__(self) -> None:
        self._stack: list[D] = []

    def _decide(self, depth: int, ids: tuple[int, ...], new: Callable[[], D | None]) -> D | None:
        """The decision at ``depth``: the recorded one within the prefix, else ``new()`` (None: abandon).

        ``ids`` are the offered threads as the search numbers them; a recorded
        decision that offered others sets :attr:`nondeterminism` and abandons.
        """
        stack = self._stack
        if depth < len(stack):
            node = stack[depth]
            if node.cands != ids:
                self.nondeterminism = (
                    f"decision {depth} offered threads {ids} where an earlier execution "
                    f"offered {node.cands}: the scenario is not deterministic"
                )
                return None
            return node
        return new()

    @staticmethod
    def _thread(cands: list[ModelThread], chosen: int, number: Sequence[int] | None = None) -> ModelThread:
        """The candidate the search numbers ``chosen`` (``number[idx]``; None: the thread's own index)."""
        for t in cands:
            if (t.idx if number is None else number[t.idx]) == chosen:
                return t
        raise AssertionError("unreachable: chosen thread not among candidates")


class RandomWalk(Strategy):
    """Uniform choice among runnable threads at every decision, from one seeded stream."""

    name = "random"
    #: ``pick(n)`` is ``int(stream() * n)``: the scheduler may draw from ``stream`` itself (no call per step)
    uniform_pick = True

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._random = random.Random(seed).random

    @property
    def stream(self) -> Callable[[], float]:
        """The uniform draws in [0, 1) every choice is made from."""
        return self._random

    def choose(
        self, cands: list[ModelThread], current: ModelThread | None, ex: Execution
    ) -> ModelThread | None:
        return cands[int(self._random() * len(cands))]

    def pick(self, n: int) -> int:
        """The index :meth:`choose` would take among ``n`` candidates (same draw from the same stream)."""
        return int(self._random() * n)

    def describe(self) -> str:
        return f"random (seed {self.seed})"


class PCT(Strategy):
    """Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010) with bug depth ``depth``.

    Every thread gets a random priority above ``depth``; the highest-priority
    runnable thread always runs. At ``depth - 1`` decision points drawn
    uniformly from the expected number of decisions, the thread that ran last
    drops to priority ``i`` (change point ``k_i``), below every initial
    priority. As in the paper the labels ``i`` are drawn independently of the
    points' order in time, so a later change point may drop below an earlier one.
    A bug that needs ``depth`` ordering constraints is found with
    probability at least 1/(n k^(depth-1)) per execution. The number of
    decisions ``k`` is learnt: the largest seen so far.
    """

    name = "pct"

    def __init__(self, depth: int = 2, seed: int = 0, horizon: int = 16) -> None:
        if depth < 1:
            raise ValueError(f"PCT depth must be at least 1, got {depth}")
        self.depth = depth
        self.seed = seed
        self.horizon = horizon
        self._rng = random.Random(seed)
        self._prio: dict[int, float] = {}
        self._changes: list[int] = []
        self._label: dict[int, int] = {}
        self._decisions = 0

    def start(self) -> bool:
        rng = self._rng
        self._prio = {}
        self._decisions = 0
        count = min(self.depth - 1, self.horizon)
        points = rng.sample(range(1, self.horizon + 1), count)
        self._label = {point: i for i, point in enumerate(points)}
        self._changes = sorted(points, reverse=True)
        return True

    def choose(
        self, cands: list[ModelThread], current: ModelThread | None, ex: Execution
    ) -> ModelThread | None:
        self._decisions += 1
        prio = self._prio
        changes = self._changes
        while changes and changes[-1] <= self._decisions:
            point = changes.pop()
            if ex.trace:
                prio[ex.trace[-1][0]] = float(self._label[point])
        best = cands[0]
        best_prio = -1.0
        for t in cands:
            p = prio.get(t.idx)
            if p is None:
                p = prio[t.idx] = self.depth + self._rng.random()
            if p > best_prio:
                best, best_prio = t, p
        return best

    def finish(self, outcome: Outcome) -> None:
        if self._decisions > self.horizon:
            self.horizon = self._decisions

    def describe(self) -> str:
        return f"pct (depth {self.depth}, seed {self.seed})"


class Replay(Strategy):
    """Follow a recorded schedule step for step; say where and why it cannot."""

    name = "replay"
    always = True

    def __init__(self, steps: tuple[int, ...]) -> None:
        self.steps = steps
        self.divergence: str | None = None

    def choose(
        self, cands: list[ModelThread], current: ModelThread | None, ex: Execution
    ) -> ModelThread | None:
        i = len(ex.trace)
        runnable = ", ".join(t.name for t in cands)
        if i >= len(self.steps):
            self.divergence = (
                f"the run goes on past the schedule's {len(self.steps)} steps; runnable were {runnable}"
            )
            return None
        want = self.steps[i]
        for t in cands:
            if t.idx == want:
                return t
        name = ex.threads[want].name if want < len(ex.threads) else f"#{want} (never created)"
        self.divergence = f"at step {i} thread {name} was expected runnable; runnable were {runnable}"
        return None

    def finish(self, outcome: Outcome) -> None:
        if self.divergence is None and len(outcome.trace) != len(self.steps):
            self.divergence = (
                f"the run ended ({outcome.status}) after {len(outcome.trace)} steps; "
                f"the schedule has {len(self.steps)}"
            )
