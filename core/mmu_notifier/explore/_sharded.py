"""The public face of the sharded exploration: :func:`explore_sharded` and :class:`ScenarioFinder`.

The machinery (shards, process pools, the Dask runner, the merge) is in
:mod:`._shards`, imported on the first call: every ``import mmu_notifier.explore``
pays only for these two names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from mmu_notifier.explore._explorer import Exploration
    from mmu_notifier.explore._scenario import Scenario
    from mmu_notifier.explore._stats import Stats


class ScenarioFinder(Protocol):
    """What a worker process finds its scenario by: picklable and hashable, with the scenario's ``name``.

    The engine knows no scenario library: :mod:`mmu_notifier.scenarios` gives
    one (``ScenarioRef``) that looks the scenario up by name and source, as a
    ``mx2:`` schedule string names it.
    """

    @property
    def name(self) -> str: ...

    def find(self) -> Scenario: ...


def explore_sharded(
    scenario: Scenario,
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
    finder: ScenarioFinder | None = None,
    progress: Callable[[Stats], None] | None = None,
    progress_every: float = 0.5,
) -> Exploration:
    """Explore ``scenario`` split into shards over ``jobs`` processes (or the Dask cluster at ``scheduler``).

    The arguments are :func:`~mmu_notifier.explore.explore`'s (a strategy by
    name), plus ``jobs`` (processes, this one included), ``scheduler`` (a Dask
    scheduler address, ``tcp://HOST:PORT``: the shards run on its workers
    instead), ``streams`` (seed streams of random and PCT searches; None: 16)
    and ``finder``, what other processes find the scenario by (needed for
    ``jobs > 1`` and Dask; :func:`mmu_notifier.scenarios.explore_parallel`
    gives one). DFS and the exhaustive search are split by schedule prefix
    and keep the single search's counts, findings and verdict; random and PCT
    run in seed streams; DPOR runs as one shard; the portfolio keeps its
    phases and shares. The report is the same for every ``jobs`` and on Dask.
    ``progress`` is called with what the shards ran so far (schedules, failing,
    elapsed; before the merge cuts them at the budget or a first finding) at most
    every ``progress_every`` seconds, as shards finish.
    Raises :class:`~mmu_notifier.errors.UsageError` for ``jobs < 1``, an
    unknown strategy, or no finder where one is needed.
    """
    from mmu_notifier.explore._shards import run_sharded

    return run_sharded(
        scenario, strategy, budget, seed, time_budget, depth=depth, preemptions=preemptions,
        stop_on_first=stop_on_first, minimise_budget=minimise_budget, reproduce=reproduce, max_steps=max_steps,
        jobs=jobs, scheduler=scheduler, streams=streams, finder=finder, progress=progress,
        progress_every=progress_every,
    )


def worker_result(future: Any, scenario: str, worker: str) -> Any:
    """``future.result()`` of work sent to a ``worker`` (a Dask worker, a worker process) about ``scenario``.

    Raises :class:`~mmu_notifier.errors.UsageError` (one line) when the worker could not find the
    scenario (a plugin that loads here but not there, a scenario file at another path).
    """
    from mmu_notifier.explore._shards import worker_result as result_of

    return result_of(future, scenario, worker)


def dask_client(address: str) -> tuple[Any, Any]:
    """The ``distributed`` module and a client of the Dask scheduler at ``address``, as ``--scheduler`` connects.

    Raises :class:`~mmu_notifier.errors.UsageError` (one line naming ``--scheduler``) when Dask distributed is
    not installed (``pip install 'mmu-notifier[distributed]'``) or the scheduler cannot be reached within 30 s.
    The caller closes the client.
    """
    from mmu_notifier.explore._shards import connect_dask

    return connect_dask(address)


def worker_context() -> Any:
    """The ``multiprocessing`` context the engine starts its worker processes with.

    ``fork`` where the platform has it and this process runs one thread (a worker starts at once, with the
    model imported), else ``spawn``. For work split the way the engine splits it (``explore --all --jobs``
    checks whole scenarios side by side): workers that find their scenario through a finder give the
    same results under either start method.
    """
    import multiprocessing

    from mmu_notifier.explore._shards import _start_method

    return multiprocessing.get_context(_start_method())
