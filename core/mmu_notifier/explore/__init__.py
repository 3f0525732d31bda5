"""The deterministic concurrency explorer's engine: find lifetime races, replay them exactly.

Model threads run one at a time on greenlets and switch only at the
scheduling points of :mod:`mmu_notifier.sync`; a strategy (seeded random
walk, PCT, bounded exhaustive search with sleep sets, optimal dynamic
partial-order reduction) decides every switch.
Detectors report use after free, double free, leaks, deadlocks, sleeping in
atomic context, lock-order inversions, exceptions and declared invariants;
every finding comes with a schedule string that replays it step for step.

The engine needs nothing of the model but :mod:`mmu_notifier.sync`,
:mod:`mmu_notifier.srcu` and :mod:`mmu_notifier.errors`: it runs any
:class:`Scenario` it is given. The scenario library (the built-ins, the
plugins' scenarios and lookup by name) is :mod:`mmu_notifier.scenarios`.
Everything public is listed in ``__all__``; the underscored modules are
internals and may change without notice.

Typical use::

    from mmu_notifier.explore import explore, replay
    from mmu_notifier.scenarios import get

    scenario = get("unregister-no-release")
    result = explore(scenario, strategy="pct", budget=200, seed=1)
    for finding in result.findings:
        print(finding.text())
        replay(scenario, finding.schedule)

(``mmu_notifier.scenarios.explore("unregister-no-release", ...)`` does the
lookup and the exploration in one call.) :func:`explore_sharded` splits one
exploration over several processes or a Dask cluster (``explore --jobs N``);
:class:`ScenarioFinder` is what its workers find the scenario by.
"""

from typing import TYPE_CHECKING

from mmu_notifier.explore._dfs import BoundedDFS, Exhaustive
from mmu_notifier.explore._explorer import (
    STRATEGIES,
    Exploration,
    Finding,
    NondeterministicScenarioError,
    Replayed,
    ThreadState,
    explore,
    make_strategy,
    replay,
)
from mmu_notifier.explore._findings import Kind, Leak, Problem, Violation
from mmu_notifier.explore._portfolio import Portfolio
from mmu_notifier.explore._scenario import LeakTracker, Scenario, ScenarioInstance
from mmu_notifier.explore._schedule import (
    DivergenceError,
    ReplayError,
    Schedule,
    ScheduleFormatError,
    StaleScheduleError,
)
from mmu_notifier.explore._scheduler import Event, Execution, Outcome
from mmu_notifier.explore._sharded import (
    ScenarioFinder,
    dask_client,
    explore_sharded,
    worker_context,
    worker_result,
)
from mmu_notifier.explore._stats import Stats
from mmu_notifier.explore._strategies import PCT, RandomWalk, Strategy
from mmu_notifier.explore._timeline import Step, Timeline

if TYPE_CHECKING:
    from mmu_notifier.explore._dpor import DPOR


def __getattr__(name: str) -> object:
    """``DPOR``, imported on first use: the largest engine module, which ``explore --strategy dfs`` never needs."""
    if name == "DPOR":
        from mmu_notifier.explore._dpor import DPOR

        return DPOR
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DPOR",
    "PCT",
    "STRATEGIES",
    "BoundedDFS",
    "Exhaustive",
    "DivergenceError",
    "Event",
    "Execution",
    "Exploration",
    "Finding",
    "Kind",
    "Leak",
    "LeakTracker",
    "NondeterministicScenarioError",
    "Outcome",
    "Portfolio",
    "Problem",
    "RandomWalk",
    "Replayed",
    "ScenarioFinder",
    "ReplayError",
    "Scenario",
    "ScenarioInstance",
    "Schedule",
    "ScheduleFormatError",
    "StaleScheduleError",
    "Stats",
    "Step",
    "Strategy",
    "ThreadState",
    "Timeline",
    "Violation",
    "dask_client",
    "explore",
    "explore_sharded",
    "make_strategy",
    "replay",
    "worker_context",
    "worker_result",
]
