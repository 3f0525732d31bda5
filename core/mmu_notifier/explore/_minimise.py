"""Schedule minimisation: the fewest preemptions, then the fewest steps, that still fail the same way.

A random or PCT schedule that shows a bug usually switches threads far more
often than the bug needs. Two searches around the failure find a simpler
witness, each run kept only if it fails with the *same* finding (kind and site):

1. *Deviation removal* (delta debugging on the schedule): the failing run is
   described by its *deviations*, the decisions where it did not take the
   default (keep running the current thread, else the lowest-numbered
   runnable one). Removing one deviation at a time and keeping each removal
   that still fails shrinks a 20-preemption schedule in a few dozen runs,
   whatever the scenario's size.
2. *Iterative preemption bounding* (as in CHESS): bounded DFS with bound 0,
   1, ... below the best count so far, within what is left of the budget. A
   bound searched to its end without the failure proves that fewer
   preemptions cannot show it.

The result says what it did (:meth:`Minimised.text`): before and after
(preemptions, steps), the runs spent, and whether the count is proven the
fewest, or that nothing could be shrunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmu_notifier.explore._dfs import BoundedDFS
from mmu_notifier.explore._scenario import Scenario
from mmu_notifier.explore._scheduler import Execution, ModelThread, Outcome
from mmu_notifier.explore._strategies import Strategy

#: passes of deviation removal over the whole list
_PASSES = 3


@dataclass
class Minimised:
    """What :func:`minimise` found: the simplest failing run, the runs spent, what is proven."""

    outcome: Outcome
    runs: int
    #: every bound below the result's preemption count was searched to its end without the failure
    proven: bool
    #: the highest bound searched to its end without the failure (-1: none)
    searched_bound: int = -1

    def text(self, original: Outcome) -> str:
        """One line: before and after, or that nothing could be shrunk, and what is proven."""
        best = self.outcome
        before = f"{_count(original.preemptions, 'preemption')}, {_count(len(original.trace), 'step')}"
        after = f"{_count(best.preemptions, 'preemption')}, {_count(len(best.trace), 'step')}"
        if best.preemptions == 0:
            proof = "no preemption needed"
        elif self.proven:
            proof = f"fewest possible: every bound below {best.preemptions} searched to its end"
        else:
            proof = "not proven fewest: the budget ended the bounded search"
        if best is original or (best.preemptions, len(best.trace)) == (original.preemptions, len(original.trace)):
            return f"could not shrink {before} in {self.runs} runs ({proof})"
        return f"shrunk from {before} to {after} in {self.runs} runs ({proof})"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Guided(Strategy):
    """Take the default choice except at listed deviations: step index -> thread index.

    The default is the thread that reached the point when it can go on, else
    the lowest-numbered runnable thread (no preemption). With ``record`` the
    strategy instead follows ``record`` (a recorded schedule) and collects its
    deviations from the default.
    """

    name = "guided"

    def __init__(self, deviations: dict[int, int], record: tuple[int, ...] | None = None) -> None:
        self.deviations = deviations
        self.record = record
        self.found: dict[int, int] = {}

    def choose(
        self, cands: list[ModelThread], current: ModelThread | None, ex: Execution
    ) -> ModelThread | None:
        step = len(ex.trace)
        default = current if current is not None and current in cands else cands[0]
        want = self.record[step] if self.record is not None and step < len(self.record) else self.deviations.get(step)
        if want is not None:
            for t in cands:
                if t.idx == want:
                    if t is not default and self.record is not None:
                        self.found[step] = want
                    return t
        return default


def _run(scenario: Scenario, strat: Strategy, max_steps: int | None) -> Outcome:
    outcome = Execution(scenario, strat, max_steps).run()
    strat.finish(outcome)
    return outcome


def _same(run: Outcome, signature: tuple[str, str]) -> bool:
    return run.problem is not None and run.problem.signature == signature


def _simpler(a: Outcome, b: Outcome) -> bool:
    return (a.preemptions, len(a.trace)) < (b.preemptions, len(b.trace))


def minimise(
    scenario: Scenario,
    signature: tuple[str, str],
    outcome: Outcome,
    budget: int,
    max_steps: int | None = None,
) -> Minimised:
    """A simplest execution failing like ``outcome`` within ``budget`` runs (``outcome`` if none is simpler)."""
    runs = 0
    best = outcome
    # 1. deviations of the failing run, then remove them one at a time
    recorder = Guided({}, record=outcome.choices)
    replayed = _run(scenario, recorder, max_steps)
    runs += 1
    deviations = dict(recorder.found) if _same(replayed, signature) else {}
    for _ in range(_PASSES):
        changed = False
        for step in sorted(deviations, reverse=True):
            if runs >= budget:
                break
            trial = {k: v for k, v in deviations.items() if k != step}
            run = _run(scenario, Guided(trial), max_steps)
            runs += 1
            if _same(run, signature) and not _simpler(best, run):
                deviations, best, changed = trial, run, True
        if not changed or runs >= budget:
            break
    # 2. bounded search below the best count so far
    searched = -1
    for bound in range(best.preemptions):
        search = BoundedDFS(bound)
        found: Outcome | None = None
        while runs < budget and search.start():
            run = _run(scenario, search, max_steps)
            runs += 1
            if _same(run, signature) and (found is None or len(run.trace) < len(found.trace)):
                found = run
        if found is not None:
            return Minimised(found, runs, proven=searched == bound - 1, searched_bound=searched)
        if not search.exhausted:
            break
        searched = bound
    proven = searched == best.preemptions - 1
    return Minimised(best, runs, proven, searched)
