"""``explore_parallel``: the engine's sharded exploration for the scenario library's scenarios, by name too.

The engine (:func:`mmu_notifier.explore.explore_sharded`) runs shards of a
search in worker processes or on a Dask cluster; a worker finds the scenario
itself, through a *finder*. The finder here, :class:`ScenarioRef`, is the
scenario's name and source, as a ``mx2:`` schedule string names them: a
built-in, a plugin's scenario, a conformance race (``conformance.DRIVER.RACE``)
or a scenario file (``file=PATH``), each looked up the way ``mmu-notifier
replay`` finds a schedule's scenario. A scenario registered in code exists
only in the process that registered it: it explores with ``jobs=1`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from mmu_notifier.errors import UsageError
from mmu_notifier.explore import Exploration, Scenario, Stats, explore_sharded
from mmu_notifier.scenarios._registry import conformance_scenario, get, load_file


@dataclass(frozen=True, slots=True)
class ScenarioRef:
    """How a worker finds a scenario again: its name and its source, as a ``mx2:`` schedule string names it."""

    name: str
    source: str

    def find(self) -> Scenario:
        """The scenario, looked up in this process (built-in, plugin, conformance race or file)."""
        if self.source.startswith("file="):
            return load_file(unquote(self.source[len("file=") :]), self.name)
        if self.source == "conformance":
            return conformance_scenario(self.name)
        return get(self.name, plugins=True)


def scenario_ref(scenario: Scenario) -> ScenarioRef:
    """The reference a worker process finds ``scenario`` by; :class:`UsageError` when no other process can."""
    if scenario.source in ("builtin", "plugin", "conformance") or scenario.source.startswith("file="):
        return ScenarioRef(scenario.name, scenario.source)
    where = "registered in code" if scenario.source == "registered" else "not from the scenario library"
    raise UsageError(
        f"scenario {scenario.name!r} is {where}: other processes cannot find it, so it explores with "
        f"jobs=1 only (a built-in, a plugin's scenario, a conformance race or FILE.py:NAME can be split)"
    )


def explore_parallel(
    scenario: Scenario | str,
    strategy: str = "portfolio",
    budget: int = 1000,
    seed: int = 0,
    time_budget: float | None = None,
    *,
    depth: int = 2,
    preemptions: int | None = None,
    stop_on_first: bool = True,
    minimise_budget: int = 2000,
    reproduce: int = 5,
    max_steps: int | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    streams: int | None = None,
    progress: Callable[[Stats], None] | None = None,
) -> Exploration:
    """Explore a scenario (or its name) split over ``jobs`` processes or the Dask cluster at ``scheduler``.

    :func:`mmu_notifier.explore.explore_sharded` with the scenario looked up by
    name when a name is given, and a :class:`ScenarioRef` for the workers.
    The arguments are :func:`mmu_notifier.explore.explore`'s plus ``jobs``
    (processes, this one included), ``scheduler`` (``tcp://HOST:PORT``) and
    ``streams`` (seed streams of random and PCT; None: the engine's 16) and ``progress`` (called with what
    the shards ran so far, as they finish). The report is the same for
    every ``jobs``. Raises :class:`UsageError` for a bad ``jobs`` and for a
    scenario other processes cannot find (registered in code) with
    ``jobs > 1`` or a scheduler; :class:`~mmu_notifier.scenarios.UnknownScenarioError`
    for an unknown name.
    """
    sc = get(scenario, plugins=True) if isinstance(scenario, str) else scenario
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UsageError(f"jobs must be a whole number of at least 1, got {jobs!r}")
    finder = scenario_ref(sc) if jobs > 1 or scheduler else None
    return explore_sharded(
        sc, strategy, budget, seed, time_budget, depth=depth, preemptions=preemptions, stop_on_first=stop_on_first,
        minimise_budget=minimise_budget, reproduce=reproduce, max_steps=max_steps, jobs=jobs, scheduler=scheduler,
        streams=streams, finder=finder, progress=progress,
    )
