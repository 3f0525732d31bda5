"""The explorer's scenario library: the built-ins, the plugins' scenarios, lookup by name.

The explorer's engine (:mod:`mmu_notifier.explore`) runs any
:class:`~mmu_notifier.explore.Scenario` and imports nothing of the model; the
scenarios here build kernels, mms and drivers, so they live apart from it:

* the built-ins: ``unregister-no-release`` and ``get-put`` (the race patch 09
  fixed in amdkfd's unwind, and the same flow under get/put;
  :mod:`mmu_notifier.scenarios.notifier`), ``abba-deadlock``,
  ``lock-order-inversion`` and ``sleep-under-spinlock`` (the lock detectors;
  :mod:`mmu_notifier.scenarios.locks`), and the interval-notifier (5.5)
  bugs ``interval-remove-race``/``-fixed``, ``interval-insert-after-exit``/
  ``-fixed`` and ``interval-oom-reaper-stuck`` (:mod:`mmu_notifier.scenarios.interval`);
* the registry: :func:`scenarios` and :func:`get` by name, with the installed
  plugins' scenarios (the ``explore_scenarios`` hook) when asked;
  :func:`register` for scenarios defined in code;
* :func:`explore` and :func:`replay`: the engine's, taking a name as well;
* :func:`kernel_clean`: the end-of-run check every scenario ends with (no WARN, no
  deferred callback raised), for the built-ins, the plugins and anyone's scenarios.

Typical use::

    from mmu_notifier.scenarios import explore, replay

    result = explore("unregister-no-release", strategy="pct", budget=200, seed=1)
    for finding in result.findings:
        replay("unregister-no-release", finding.schedule)
"""

from mmu_notifier.scenarios._by_name import explore, replay
from mmu_notifier.scenarios._checks import kernel_clean
from mmu_notifier.scenarios._registry import (
    BUILTIN,
    UnknownScenarioError,
    conformance_scenario,
    get,
    load_file,
    plugin_scenarios,
    plugin_scenarios_report,
    register,
    resolve,
    scenarios,
    unregister,
)

__all__ = [
    "BUILTIN",
    "UnknownScenarioError",
    "conformance_scenario",
    "explore",
    "get",
    "kernel_clean",
    "load_file",
    "plugin_scenarios",
    "plugin_scenarios_report",
    "register",
    "replay",
    "resolve",
    "scenarios",
    "unregister",
]
