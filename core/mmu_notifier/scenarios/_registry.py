"""The scenario registry: built-ins, scenarios registered in code, and plugins' scenarios.

Plugins contribute through the ``explore_scenarios`` hook (see
:mod:`mmu_notifier.hookspecs`); :func:`scenarios` asks the installed driver
plugins once per call when ``plugins=True``. Names are unique: a later
scenario of an existing name is refused, so a plugin cannot silently replace
a built-in.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

from mmu_notifier.errors import PluginError, UsageError
from mmu_notifier.explore import Scenario, Schedule
from mmu_notifier.kernel import Kernel
from mmu_notifier.scenarios import interval, locks, notifier


def _stamped(scenario: Scenario, source: str) -> Scenario:
    """``scenario`` with its ``source`` set (kept when already set)."""
    return scenario if scenario.source else dataclasses.replace(scenario, source=source)


#: the built-in scenarios: the patch-09 race and its get/put fix, the interval-notifier (5.5) bugs, and the
#: lock-rule demonstrations
BUILTIN: tuple[Scenario, ...] = tuple(
    _stamped(s, "builtin") for s in (*notifier.SCENARIOS, *interval.SCENARIOS, *locks.SCENARIOS)
)

_registered: dict[str, Scenario] = {}


class UnknownScenarioError(KeyError):
    """No scenario of that name; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def register(scenario: Scenario) -> Scenario:
    """Add a scenario for this process (for tests and embedding code); returns it."""
    if scenario.name in _registered or any(s.name == scenario.name for s in BUILTIN):
        raise ValueError(f"a scenario named {scenario.name!r} exists already")
    stamped = _stamped(scenario, "registered")
    _registered[scenario.name] = stamped
    return stamped


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
            found.extend(_stamped(s, "plugin") for s in batch)
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


CONFORMANCE_PREFIX = "conformance."


def get(name: str, plugins: bool = False) -> Scenario:
    """The scenario called ``name``; looks at plugins only if it is not found otherwise.

    Also takes ``FILE.py:NAME`` (a scenario defined in a file, see
    :func:`load_file`) and the kit's race names ``conformance.DRIVER.RACE``.
    """
    if ".py:" in name:
        path, _, scenario = name.rpartition(":")
        return load_file(path, scenario)
    if name.startswith(CONFORMANCE_PREFIX):
        return conformance_scenario(name)
    known = scenarios()
    if name not in known and plugins:
        known = scenarios(plugins=True)
    if name not in known:
        raise UnknownScenarioError(f"unknown scenario {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def conformance_scenario(name: str) -> Scenario:
    """The kit's race ``conformance.DRIVER.RACE`` for the installed driver ``DRIVER``."""
    from mmu_notifier.conformance.harness import DriverUnderTest, LoadFailure
    from mmu_notifier.conformance.races import RACES, race_scenario

    driver, _, key = name[len(CONFORMANCE_PREFIX) :].rpartition(".")
    if key not in RACES or not driver:
        raise UnknownScenarioError(
            f"unknown conformance race {name!r}: expected conformance.DRIVER.RACE with RACE one of "
            f"{', '.join(sorted(RACES))}"
        )
    try:
        dut = DriverUnderTest.load(driver)
    except LoadFailure as error:
        raise UnknownScenarioError(f"conformance race {name!r}: {error}") from None
    found: Scenario = race_scenario(dut, key)
    return found


def load_file(path: str | Path, name: str) -> Scenario:
    """The scenario called ``name`` defined in the Python file ``path``.

    The file is imported as a module; the scenario is a module-level
    :class:`~mmu_notifier.explore.Scenario` whose ``name`` is ``name`` (found
    among the module's attributes, and in a ``SCENARIOS`` list or tuple). Its
    source becomes ``file=PATH`` so that its schedules replay with the file.
    Raises :class:`UsageError` for a missing file, one that fails to import,
    or a name the file does not define.
    """
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"scenario file {str(file)!r} does not exist")
    module_name = f"_mmu_notifier_scenario_file_{abs(hash(str(file.resolve())))}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:
            raise UsageError(f"scenario file {str(file)!r} cannot be imported as Python")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise UsageError(f"scenario file {str(file)!r} failed to import: {type(error).__name__}: {error}") from None
        sys.modules[module_name] = module
    found: dict[str, Scenario] = {}
    for value in vars(module).values():
        items = value if isinstance(value, (list, tuple)) else (value,)
        for item in items:
            if isinstance(item, Scenario):
                found.setdefault(item.name, item)
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise UsageError(f"scenario file {str(file)!r} defines no scenario named {name!r} (it defines: {known})")
    return dataclasses.replace(found[name], source=Schedule.file_source(str(file)))


def resolve(schedule: str | Schedule, name: str | None = None) -> Scenario:
    """The scenario a schedule string was recorded for, from the string alone when it can.

    ``name`` (a scenario name or ``FILE.py:NAME``) overrides the lookup; an
    ``mx2`` string names its source (built-in, plugin, conformance race, file)
    and is found from it; an ``mx1`` string is looked up by the name it
    carries, and a name that is not found asks for the scenario name.
    """
    sched = schedule if isinstance(schedule, Schedule) else Schedule.parse(schedule)
    if name is not None:
        return get(name, plugins=True)
    file = sched.file
    if file is not None:
        return load_file(file, sched.scenario)
    if sched.source == "registered" and sched.scenario not in _registered:
        raise UsageError(
            f"scenario {sched.scenario!r} was registered in code by the program that recorded the schedule; "
            "replay it from that program (mmu_notifier.scenarios.replay)"
        )
    try:
        return get(sched.scenario, plugins=True)
    except UnknownScenarioError as error:
        if sched.source is None:
            raise UsageError(
                f"this schedule was made by an older version (mx1) and does not say where scenario "
                f"{sched.scenario!r} comes from: give the scenario name or FILE.py:NAME before the schedule "
                f"(mmu-notifier replay NAME SCHEDULE); {error}"
            ) from None
        raise
