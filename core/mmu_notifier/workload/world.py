"""The main job's world: the machine one run executes on, and its end-of-run checks.

A :class:`JobWorld` is one execution's fresh state, as a booted machine with
modules loaded: a :class:`~mmu_notifier.Kernel` with the workload's drivers
(loaded through their entry points, as ``modprobe`` would), each driver's
exerciser (its user-space interface), the counting tracer, the invariants
:class:`~mmu_notifier.invariants.Monitor`, and the address spaces and
counters the processes share. :func:`unload` is the modules' exit;
:func:`check_world` the end-of-run rules. What each process does is in
:mod:`mmu_notifier.workload.steps`; the loop that runs them in
:mod:`mmu_notifier.workload.runner`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mmu_notifier import exerciser as contract
from mmu_notifier.exerciser import Exerciser
from mmu_notifier.invariants import InvariantViolation, Monitor, check_exit_coherence
from mmu_notifier.kernel import Kernel
from mmu_notifier.mm import MM
from mmu_notifier.workload.model import Workload, WorkloadError
from mmu_notifier.workload.stats import DriverStats, StatsTracer

__all__ = ["JobWorld", "Region", "check_world", "load_drivers", "new_world", "unload"]


@dataclass
class Region:
    """A range a process mapped: ``[start, start + pages * page_size)``."""

    start: int
    pages: int


@dataclass
class JobWorld:
    """One execution's fresh state: a kernel, the drivers' exercisers and the counters."""

    workload: Workload
    kernel: Kernel
    exercisers: dict[str, Exerciser]
    stats: dict[str, DriverStats]
    tracer: StatsTracer
    monitor: Monitor
    #: live address spaces by identity, in creation order (an exit is O(1) at any scale)
    live: dict[int, MM] = field(default_factory=dict)
    every_mm: list[MM] = field(default_factory=list)
    steps: int = 0
    skipped: int = 0
    violations: list[str] = field(default_factory=list)
    on_step: Callable[[int], None] | None = None

    def count_step(self) -> None:
        """One process step or background operation done."""
        self.steps += 1
        if self.on_step is not None:
            self.on_step(self.steps)


def load_drivers(workload: Workload) -> Kernel:
    """A kernel with the workload's drivers loaded; :class:`WorkloadError` if one cannot be."""
    kernel = Kernel()
    report = kernel.drivers.load_entry_points(workload.driver_configs, only=workload.drivers)
    if report.failed:
        name, error = next(iter(sorted(report.failed.items())))
        raise WorkloadError(f"driver {name!r} cannot be used: {error}")
    return kernel


def new_world(workload: Workload) -> JobWorld:
    """Load the drivers, bind their exercisers and install the counting tracer."""
    kernel = load_drivers(workload)
    exercisers = {}
    for ops in kernel.drivers:
        if ops.exerciser is None:
            raise WorkloadError(f"driver {ops.name!r} offers no exerciser, so no workload can drive it")
        exercisers[ops.name] = ops.exerciser(kernel)
    stats = {name: DriverStats() for name in exercisers}
    tracer = StatsTracer(stats)
    kernel.drivers.add_plugin(tracer, name="workload-stats")
    return JobWorld(workload, kernel, exercisers, stats, tracer, Monitor(kernel, exercisers.values()))


def unload(world: JobWorld) -> None:
    """Module unload: every driver drops its device state and calls ``synchronize``."""
    for exerciser in world.exercisers.values():
        exerciser.unload()


def record(world: JobWorld, driver: str, violation: InvariantViolation) -> None:
    """File ``violation`` under ``driver``: as known kernel behaviour when the driver's exerciser declares its check
    in ``known_kernel_violations`` (check name -> the kernel's reason), else as a violation."""
    known = getattr(world.exercisers[driver], "known_kernel_violations", None) or {}
    reason = known.get(violation.check)
    if reason is None:
        world.stats[driver].violations.append(str(violation))
    else:
        world.stats[driver].known.append(f"{violation} (known kernel behaviour: {reason})")


def exit_coherence(world: JobWorld, mm: MM) -> None:
    """Right after an exit: a driver with a release callback translates nothing of the mm (checked at once, since
    the process's files, and so its attaches, are closed only afterwards)."""
    for name, ex in world.exercisers.items():
        caps = ex.capabilities
        if contract.RELEASE in caps and contract.DEVICE_TRANSLATIONS in caps:
            for violation in check_exit_coherence(mm, ex.translations(mm), name):
                record(world, name, violation)


def check_world(world: JobWorld) -> None:
    """End-of-run rules, after every module unloaded: every invariant of the conformance kit
    (:class:`~mmu_notifier.invariants.Monitor`: pairing, frees, release, coherence, leaks,
    refcounts, WARNs) and no frame left allocated."""
    for violation in world.monitor.check(settled=True):
        text = str(violation)
        drivers = [name for name in world.stats if re.search(rf"\b{re.escape(name)}\b", text)]
        for name in drivers:
            record(world, name, violation)
        if not drivers:
            world.violations.append(text)
    kernel = world.kernel
    if kernel.memory.in_use():
        world.violations.append(f"{kernel.memory.in_use()} frames still allocated after every process exited")
