"""The default search: a portfolio of strategies sharing one schedule budget.

No single strategy finds every bug cheaply: bounded exhaustive search proves
the absence of bugs up to a small number of preemptions but grows
exponentially with the bound; PCT finds a bug of depth ``d`` with a known
probability per schedule but only if ``d`` is guessed; a random walk needs no
guess but favours shallow interleavings. The portfolio runs them in that
order within the budget, so that a small scenario gets a proof and a large
one still gets samples at several depths:

0. optimal DPOR, unbounded (:mod:`._dpor`), while its share lasts: when it
   ends, every Mazurkiewicz trace was explored, a proof under the model's
   conventions; the later phases still run, under the default scheduler, so
   a scenario that breaks those conventions is still caught;
1. bounded DFS with preemption bound 0, 1, ... up to ``max_bound`` (each
   bound to its end while the DFS share of the budget lasts);
2. PCT at depth 2, 3, 4, 5 (an equal share each);
3. a seeded random walk with whatever is left.

What was covered is kept (:attr:`Portfolio.exhaustive_bound`,
:attr:`Portfolio.sampled`) so the verdict can say exactly that: "exhaustive to
2 preemptions: clean" is a proof up to that bound; "N sampled schedules, not
exhaustive" is not. The scheduler modes a phase needs (DPOR's records, retry
steps and lazy waits) are the running phase's, read per execution.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeGuard

from mmu_notifier.explore._dfs import BoundedDFS
from mmu_notifier.explore._findings import Problem
from mmu_notifier.explore._scheduler import Execution, ModelThread, Outcome
from mmu_notifier.explore._strategies import PCT, RandomWalk, Strategy

if TYPE_CHECKING:
    from mmu_notifier.explore._dpor import DPOR

#: share of the budget for DPOR, for the bounded exhaustive phases, then for PCT; random gets the rest
DPOR_SHARE = 0.3
DFS_SHARE = 0.25
PCT_SHARE = 0.3
PCT_DEPTHS = (2, 3, 4, 5)


def _is_dpor(strat: Strategy) -> TypeGuard[DPOR]:
    """Whether ``strat`` is the DPOR phase (by name: :mod:`._dpor` is imported only when a portfolio uses it)."""
    return strat.name == "dpor"


class Portfolio(Strategy):
    """Bounded DFS up to ``max_bound`` preemptions, then PCT at rising depth, then random; one budget."""

    name = "portfolio"

    def __init__(self, budget: int, seed: int = 0, max_bound: int = 2, dpor: bool = True) -> None:
        if budget < 1:
            raise ValueError(f"portfolio budget must be at least 1 schedule, got {budget}")
        self.budget = budget
        self.seed = seed
        self.max_bound = max_bound
        dfs_cap = max(1, int(budget * DFS_SHARE))
        pct_each = max(1, int(budget * PCT_SHARE / len(PCT_DEPTHS)))
        #: (strategy, schedule cap or None for unlimited, label)
        self._phases: list[tuple[Strategy, int | None, str]] = []
        if dpor:
            from mmu_notifier.explore._dpor import DPOR  # imported when a portfolio uses it, not with the engine

            self._phases.append((DPOR(), max(1, int(budget * DPOR_SHARE)), "dpor"))
        self._phases += [(BoundedDFS(bound), None, f"dfs {bound}") for bound in range(max_bound + 1)]
        self._phases += [(PCT(depth, seed + depth), pct_each, f"pct {depth}") for depth in PCT_DEPTHS]
        self._phases.append((RandomWalk(seed), None, "random"))
        self._dfs_cap = dfs_cap
        self._dfs_used = 0
        self._index = 0
        self._used = 0
        #: the largest preemption bound whose search ended (None: not even bound 0)
        self.exhaustive_bound: int | None = None
        #: DPOR ended: every trace explored (a proof), this many
        self.dpor_traces: int | None = None
        self.retry_steps = self.lazy_waits = self.run_past_failures = False
        self._take_modes()
        #: schedules run by the exhaustive phases, and by the sampling ones
        self.systematic = 0
        self.sampled = 0
        #: label of each phase run and the schedules it ran
        self.ran: dict[str, int] = {}

    @property
    def current(self) -> Strategy:
        """The phase running now."""
        return self._phases[self._index][0]

    def _is_dfs(self) -> bool:
        return isinstance(self.current, BoundedDFS)

    def _take_modes(self) -> None:
        """Copy the running phase's scheduler modes (the explorer reads them for every execution)."""
        phase = self.current
        self.always = bool(getattr(phase, "always", False))
        self.records = bool(getattr(phase, "records", False))
        self.retry_steps = bool(getattr(phase, "retry_steps", False))
        self.lazy_waits = bool(getattr(phase, "lazy_waits", False))
        self.run_past_failures = bool(getattr(phase, "run_past_failures", False))

    def report(self, outcome: Outcome) -> list[tuple[Problem, tuple[int, ...] | None]]:
        """The running phase's findings of ``outcome`` (DPOR gives schedules the default scheduler replays)."""
        own: Any = getattr(self.current, "report", None)
        if own is not None:
            found: list[tuple[Problem, tuple[int, ...] | None]] = own(outcome)
            return found
        return [(p, None) for p in (outcome.problem, outcome.predicted) if p is not None]

    def start(self) -> bool:
        if self.exhausted:
            return False
        while True:
            strat, cap, _ = self._phases[self._index]
            if _is_dpor(strat) and strat.exhausted and not strat.unexecutable and not strat.bounded:
                # every trace explored; the later phases still run: they check the reduction's conventions
                # (a scenario touching state no scheduling point names) with the default scheduler
                self.dpor_traces = strat.traces
            dfs = isinstance(strat, BoundedDFS)
            spent = (dfs and self._dfs_used >= self._dfs_cap) or (cap is not None and self._used >= cap)
            if not spent and strat.start():
                self._take_modes()
                return True
            if dfs and strat.exhausted:
                self.exhaustive_bound = strat.bound  # type: ignore[attr-defined]
            if dfs and not strat.exhausted:
                # the DFS share is spent: higher bounds would not end either
                while isinstance(self._phases[self._index + 1][0], BoundedDFS):
                    self._index += 1
            self._index += 1
            self._used = 0

    def choose(
        self, cands: list[ModelThread], current: ModelThread | None, ex: Execution
    ) -> ModelThread | None:
        return self.current.choose(cands, current, ex)

    def finish(self, outcome: Outcome) -> None:
        strat, _, label = self._phases[self._index]
        strat.finish(outcome)
        self._used += 1
        self.ran[label] = self.ran.get(label, 0) + 1
        if _is_dpor(strat):
            self.systematic += 1
        elif isinstance(strat, BoundedDFS):
            self._dfs_used += 1
            self.systematic += 1
            if strat.exhausted:
                self.exhaustive_bound = strat.bound
        else:
            self.sampled += 1
        self.pruned = sum(s.pruned for s, _, _ in self._phases)
        for s, _, _ in self._phases:
            if s.nondeterminism:
                self.nondeterminism = s.nondeterminism

    def describe(self) -> str:
        ran = ", ".join(f"{label} x{count}" for label, count in self.ran.items())
        return f"portfolio (seed {self.seed}: {ran or 'nothing run'})"

    def coverage(self) -> str:
        """What the schedules run so far cover, as a verdict states it."""
        parts = []
        if self.dpor_traces is not None:
            parts.append(f"exhaustive: all {self.dpor_traces:,} traces explored (dpor)")
        if self.exhaustive_bound is not None:
            bound = self.exhaustive_bound
            parts.append(f"exhaustive to {bound} preemption{'' if bound == 1 else 's'}")
        if self.sampled:
            parts.append(f"{self.sampled:,} sampled schedules (pct depth 2-5, random)")
        return ", then ".join(parts) if parts else f"{self.systematic:,} schedules of a bounded search, not complete"
