"""The scenario registry: built-ins, scenarios registered in code, and plugins' scenarios.

Plugins contribute through the ``explore_scenarios`` hook (see
:mod:`mmu_notifier.hookspecs`); :func:`scenarios` asks the installed driver
plugins once per call when ``plugins=True``. Names are unique: a later
scenario of an existing name is refused, so a plugin cannot silently replace
a built-in.
"""

from __future__ import annotations

from collections.abc import Iterable

from mmu_notifier.errors import PluginError
from mmu_notifier.explore import Scenario
from mmu_notifier.kernel import Kernel
from mmu_notifier.scenarios import interval, locks, notifier

#: the built-in scenarios: the patch-09 race and its get/put fix, the interval-notifier (5.5) bugs, and the
#: lock-rule demonstrations
BUILTIN: tuple[Scenario, ...] = (*notifier.SCENARIOS, *interval.SCENARIOS, *locks.SCENARIOS)

_registered: dict[str, Scenario] = {}


class UnknownScenarioError(KeyError):
    """No scenario of that name; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def register(scenario: Scenario) -> Scenario:
    """Add a scenario for this process (for tests and embedding code); returns it."""
    if scenario.name in _registered or any(s.name == scenario.name for s in BUILTIN):
        raise ValueError(f"a scenario named {scenario.name!r} exists already")
    _registered[scenario.name] = scenario
    return scenario


def unregister(name: str) -> None:
    """Remove a scenario added with :func:`register`."""
    _registered.pop(name, None)


def plugin_scenarios_report(
    skip: Iterable[str] = (), only: Iterable[str] | None = None
) -> tuple[list[Scenario], dict[str, Exception]]:
    """Scenarios of the installed driver plugins (``explore_scenarios``), one plugin at a time, and the
    plugins left out with the reason: one that fails to load, whose hook raises or returns something
    that is not a :class:`~mmu_notifier.explore.Scenario`, or that reuses a known scenario's name."""
    kernel = Kernel(frames=16)
    report = kernel.drivers.load_entry_points(only=only, skip=skip)
    failed: dict[str, Exception] = dict(report.failed)
    taken = {s.name for s in (*BUILTIN, *_registered.values())}
    found: list[Scenario] = []
    for name in kernel.drivers.names():
        try:
            batch = kernel.drivers.scenarios_of(name)
        except (Exception, SystemExit) as error:
            failed[name] = PluginError(name, f"explore_scenarios raised {type(error).__name__}: {error}")
            continue
        bad = [s for s in batch if not isinstance(s, Scenario)]
        clash = sorted({s.name for s in batch if isinstance(s, Scenario)} & taken)
        if bad:
            failed[name] = PluginError(name, f"explore_scenarios returned {bad[0]!r}, "
                                             "not a mmu_notifier.explore.Scenario")
        elif clash:
            failed[name] = PluginError(name, f"explore_scenarios reuses the scenario name {clash[0]!r}")
        else:
            found.extend(batch)
            taken.update(s.name for s in batch)
    return found, failed


def plugin_scenarios() -> list[Scenario]:
    """Scenarios from the installed driver plugins' ``explore_scenarios`` hook (broken plugins left out;
    :func:`plugin_scenarios_report` says which and why)."""
    return plugin_scenarios_report()[0]


def scenarios(plugins: bool = False) -> dict[str, Scenario]:
    """Every known scenario by name: built-ins, registered ones, then (optionally) plugins'."""
    out: dict[str, Scenario] = {}
    extra = plugin_scenarios() if plugins else []
    for scenario in [*BUILTIN, *_registered.values(), *extra]:
        if scenario.name in out:
            raise ValueError(f"two scenarios are named {scenario.name!r}")
        out[scenario.name] = scenario
    return out


def get(name: str, plugins: bool = False) -> Scenario:
    """The scenario called ``name``; looks at plugins only if it is not found otherwise."""
    known = scenarios()
    if name not in known and plugins:
        known = scenarios(plugins=True)
    if name not in known:
        raise UnknownScenarioError(f"unknown scenario {name!r}; known: {', '.join(sorted(known))}")
    return known[name]
