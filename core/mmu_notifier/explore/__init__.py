"""The deterministic concurrency explorer: find lifetime races, replay them exactly.

Model threads run one at a time on greenlets and switch only at the
scheduling points of :mod:`mmu_notifier.sync`; a strategy (seeded random
walk, PCT, bounded exhaustive search with sleep sets) decides every switch.
Detectors report use after free, double free, leaks, deadlocks, sleeping in
atomic context, lock-order inversions, exceptions and declared invariants;
every finding comes with a schedule string that replays it step for step.

Typical use::

    from mmu_notifier.explore import explore, replay

    result = explore("unregister-no-release", strategy="pct", budget=200, seed=1)
    for finding in result.findings:
        print(finding.text())
        replay("unregister-no-release", finding.schedule)
"""

from mmu_notifier.explore.explorer import (
    STRATEGIES,
    Exploration,
    Finding,
    NondeterministicScenarioError,
    Replayed,
    explore,
    make_strategy,
    replay,
)
from mmu_notifier.explore.findings import Kind, Problem
from mmu_notifier.explore.registry import UnknownScenarioError, register, scenarios
from mmu_notifier.explore.scenario import Leak, LeakTracker, Scenario, ScenarioInstance, Violation
from mmu_notifier.explore.schedule import (
    DivergenceError,
    ReplayError,
    Schedule,
    ScheduleFormatError,
    StaleScheduleError,
)
from mmu_notifier.explore.stats import Stats

__all__ = [
    "STRATEGIES",
    "DivergenceError",
    "Exploration",
    "Finding",
    "Kind",
    "Leak",
    "LeakTracker",
    "NondeterministicScenarioError",
    "Problem",
    "Replayed",
    "ReplayError",
    "Scenario",
    "ScenarioInstance",
    "Schedule",
    "ScheduleFormatError",
    "StaleScheduleError",
    "Stats",
    "UnknownScenarioError",
    "Violation",
    "explore",
    "make_strategy",
    "register",
    "replay",
    "scenarios",
]
