"""``explore`` and ``replay`` that also take a scenario's name: the engine's, after a lookup.

The engine (:mod:`mmu_notifier.explore`) runs :class:`~mmu_notifier.explore.Scenario`
objects and knows no names, because finding the built-ins and the plugins'
scenarios means importing the model. These two functions take a name or a
scenario, look the name up (built-ins, registered ones, then the installed
plugins', as ``mmu-notifier explore NAME`` does) and hand the scenario with
every other argument to the engine unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from mmu_notifier import explore as engine
from mmu_notifier.explore import Scenario
from mmu_notifier.scenarios._registry import get

P = ParamSpec("P")
R = TypeVar("R")


def _by_name(run: Callable[Concatenate[Scenario, P], R], doc: str) -> Callable[Concatenate[Scenario | str, P], R]:
    """``run`` with its first argument looked up by :func:`get` when it is a name."""

    def by_name(scenario: Scenario | str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        resolved = get(scenario, plugins=True) if isinstance(scenario, str) else scenario
        return run(resolved, *args, **kwargs)

    by_name.__name__ = by_name.__qualname__ = run.__name__
    by_name.__module__ = "mmu_notifier.scenarios"
    by_name.__doc__ = doc
    first, *rest = inspect.signature(run).parameters.values()
    first = first.replace(annotation="Scenario | str", kind=inspect.Parameter.POSITIONAL_ONLY)
    shown = inspect.signature(run).replace(parameters=[first, *rest])
    by_name.__signature__ = shown  # type: ignore[attr-defined]  # help() shows the engine's parameters
    return by_name


explore = _by_name(
    engine.explore,
    """Explore a scenario given by name (or as a Scenario): :func:`mmu_notifier.explore.explore` after a lookup.

    Raises :class:`~mmu_notifier.scenarios.UnknownScenarioError` (listing the
    known names) for an unknown name; every other argument is the engine's.
    """,
)

replay = _by_name(
    engine.replay,
    """Replay a schedule of a scenario given by name (or as a Scenario): :func:`mmu_notifier.explore.replay`.

    Raises :class:`~mmu_notifier.scenarios.UnknownScenarioError` for an
    unknown name; the schedule's errors are the engine's.
    """,
)
