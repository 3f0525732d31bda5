"""Schedule minimisation: the fewest preemptions, then the fewest steps, that still fail.

A random or PCT schedule that shows a bug usually switches threads far more
often than the bug needs. Iterative preemption bounding (as in CHESS) finds a
simpler witness: a bounded search with bound 0, 1, 2 ... up to the original's
count, keeping executions that fail with the *same* finding (kind and site);
the first bound with such an execution wins, and within it the shortest
execution found. The search stops at a schedule budget and falls back to the
original schedule.
"""

from __future__ import annotations

from mmu_notifier.explore._dfs import BoundedDFS
from mmu_notifier.explore._scenario import Scenario
from mmu_notifier.explore._scheduler import Execution, Outcome


def minimise(
    scenario: Scenario,
    signature: tuple[str, str],
    outcome: Outcome,
    budget: int,
    max_steps: int | None = None,
) -> Outcome:
    """A simplest execution failing like ``outcome`` (``outcome`` itself if none is found)."""
    spent = 0
    for bound in range(outcome.preemptions):
        best: Outcome | None = None
        search = BoundedDFS(bound)
        while spent < budget and search.start():
            run = Execution(scenario, search, max_steps).run()
            search.finish(run)
            spent += 1
            problem = run.problem
            if (
                problem is not None
                and problem.signature == signature
                and (best is None or len(run.trace) < len(best.trace))
            ):
                best = run
        if best is not None:
            return best
        if spent >= budget:
            break
    return outcome
