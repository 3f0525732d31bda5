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

A driver whose plugin cannot be loaded, or whose exerciser cannot be made, is
*left out* of the run (:attr:`JobWorld.left_out`, with the reason) while every
healthy driver runs, as a failing ``modprobe`` leaves the other modules be.
An exception of a driver's own code (a callback, its exerciser, its unload)
is a fault of that driver (:meth:`StatsTracer.fault`), never the end of the
run: teardown, unload and every end-of-run check still happen.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from mmu_notifier import exerciser as contract
from mmu_notifier import sync
from mmu_notifier.errors import ConfigError, PluginError
from mmu_notifier.exerciser import Exerciser
from mmu_notifier.hookspecs import CALLBACKS
from mmu_notifier.invariants import InvariantViolation, Monitor, check_coherence, check_exit_coherence
from mmu_notifier.kernel import Kernel
from mmu_notifier.mm import MM
from mmu_notifier.workload.model import Workload
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
    #: violations already filed (a stale translation stays stale: it is reported once)
    seen: set[str] = field(default_factory=set)
    #: quiescent points at which coherence was checked
    quiescent_checks: int = 0
    #: steps during which a driver's code raised (the step did not complete)
    failed: int = 0
    #: drivers left out of the run because their plugin is broken: name -> reason
    left_out: dict[str, str] = field(default_factory=dict)
    #: the top-level module package of each driver (to attribute an exception to the driver whose code raised)
    packages: dict[str, str] = field(default_factory=dict)
    #: access steps refused at every page while the mm stayed quiet, in a row, per (driver, id(mm)); and the
    #: drivers already filed as stuck (see :mod:`mmu_notifier.workload.refusals`)
    refused_streaks: dict[tuple[str, int], int] = field(default_factory=dict)
    stuck: set[str] = field(default_factory=set)
    #: threads mode: an exception no driver owns that ended a model thread's body, one line each, and its
    #: traceback by thread name (kept here, so a run the watchdog or Ctrl-C stops still reports them)
    thread_errors: list[str] = field(default_factory=list)
    tracebacks: dict[str, str] = field(default_factory=dict)

    def count_step(self) -> None:
        """One process step or background operation done."""
        self.steps += 1
        if self.on_step is not None:
            self.on_step(self.steps)

    def driver_fault(self, driver: str, what: str, error: BaseException) -> None:
        """``driver``'s ``what`` raised ``error``: a fault of that driver (named more precisely by the
        innermost driver callback on the traceback, e.g. ``alloc_notifier`` under ``attach``)."""
        callback = _innermost_callback(error.__traceback__)
        where = f"{callback} (during {what})" if callback and callback != what else what
        self.tracer.fault(driver, where, error)

    def blame(self, error: BaseException) -> str | None:
        """The driver whose package holds the innermost frame of ``error``'s traceback, if any."""
        found = None
        tb = error.__traceback__
        while tb is not None:
            module = str(tb.tb_frame.f_globals.get("__name__", ""))
            for driver, package in self.packages.items():
                if module == package or module.startswith(package + "."):
                    found = driver
            tb = tb.tb_next
        return found


def _innermost_callback(tb: TracebackType | None) -> str | None:
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_name in CALLBACKS and "mmu_notifier/" not in tb.tb_frame.f_code.co_filename:
            found = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return found


def _reason(error: Exception) -> str:
    if isinstance(error, ConfigError):
        return "invalid config: " + "; ".join(error.problems)
    return error.reason if isinstance(error, PluginError) else f"{type(error).__name__}: {error}"


def load_drivers(workload: Workload) -> tuple[Kernel, dict[str, str]]:
    """A kernel with the workload's drivers loaded, and the ones that could not be (name -> reason)."""
    kernel = Kernel()
    report = kernel.drivers.load_entry_points(workload.driver_configs, only=workload.drivers)
    return kernel, {name: _reason(error) for name, error in sorted(report.failed.items())}


def new_world(workload: Workload) -> JobWorld:
    """Load the drivers, bind their exercisers and install the counting tracer; broken drivers are left out."""
    kernel, left_out = load_drivers(workload)
    exercisers: dict[str, Exerciser] = {}
    packages: dict[str, str] = {}
    for ops in list(kernel.drivers):
        if ops.exerciser is None:
            left_out[ops.name] = "offers no exerciser, so no workload can drive it"
            continue
        try:
            exerciser = ops.exerciser(kernel)
        except Exception as error:
            left_out[ops.name] = f"its exerciser hook raised {type(error).__name__}: {error}"
            continue
        if not isinstance(exerciser, Exerciser):
            left_out[ops.name] = f"its exerciser hook returned {exerciser!r}, not an Exerciser"
            continue
        exercisers[ops.name] = exerciser
        packages[ops.name] = type(ops.driver).__module__.partition(".")[0]
    stats = {name: DriverStats() for name in exercisers}
    tracer = StatsTracer(stats)
    kernel.drivers.add_plugin(tracer, name="workload-stats")
    world = JobWorld(workload, kernel, exercisers, stats, tracer, Monitor(kernel, exercisers.values()))
    world.left_out = dict(sorted(left_out.items()))
    world.packages = packages
    return world


def unload(world: JobWorld) -> None:
    """Module unload: every driver drops its device state and calls ``synchronize``; one that raises is a
    fault of that driver, and the others still unload."""
    for name, exerciser in world.exercisers.items():
        try:
            with world.tracer.calling(name, "unload"):
                exerciser.unload()
        except Exception as error:
            world.driver_fault(name, "unload", error)


def count_allocations(world: JobWorld) -> None:
    """Fill each driver's ``allocated``: the subscriptions the core received, as the invariants recorder saw
    them: every ``alloc_notifier`` result, and every subscription a driver registered itself (5.4 amdkfd's
    ``mmu_notifier_register``). Not the attaches, which mostly reuse a subscription."""
    recorder = world.monitor.recorder
    with recorder.lock:
        records = list(recorder.records.values())
    counts = dict.fromkeys(world.stats, 0)
    for record in records:
        driver = record.driver
        if driver == "?":
            ops = getattr(record.sub, "ops", None)
            driver = getattr(ops, "name", "?")
        if driver in counts:
            counts[driver] += 1
    for name, count in counts.items():
        world.stats[name].allocated = count


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
    the process's files, and so its attaches, are closed only afterwards).

    Only once the mm is torn down: while another task (reclaim, a driver's worker) still holds
    ``mm_users``, ``exit_mmap`` and so ``release`` have not run yet and a translation is legal;
    the end-of-run checks cover that mm.
    """
    if mm.alive:
        return
    for name, ex in world.exercisers.items():
        caps = ex.capabilities
        if contract.RELEASE in caps and contract.DEVICE_TRANSLATIONS in caps:
            try:
                with world.tracer.calling(name, "translations"), sync.observing():
                    translations = ex.translations(mm)
            except Exception as error:  # the driver's own bug: its fault, the other drivers are still checked
                world.driver_fault(name, "translations", error)
                continue
            for violation in check_exit_coherence(mm, translations, name):
                record(world, name, violation)


def check_quiescent(world: JobWorld, mm: MM | None) -> None:
    """Coherence of ``mm`` at a quiescent point: after a process step or a background operation.

    Quiescent means no invalidation of the mm is in flight (every start
    delivered has had its end), so each driver's translations must match
    the CPU page table, as the kit's coherence check requires; a stale one
    is filed under its driver, once. An exited mm is judged by
    :func:`exit_coherence` instead.

    On OS threads (the threads mode) the background thread may begin an invalidation of the mm
    while the check reads: a translation read before the driver dropped it, compared with the
    page table read after the kernel changed it, is no stale translation. And the background
    thread's check of a process's mm may read a device the process is tearing down: a
    subscription it reads through may be freed under it (a use after free of the check's, not
    the driver's). So the check keeps what it found, or lets what its reads raised propagate,
    only if no invalidation of the mm began and no subscription of the mm was freed during its
    reads (the recorder's :meth:`~mmu_notifier.invariants.Recorder.quiet_seq` before and after,
    the seqcount retry of an interval notifier's reader); otherwise the point was not quiescent
    after all. On the deterministic scheduler nothing else runs between the two reads unless
    the check waits for a lock, so nothing is dropped there but such a check.

    Costs O(the work of ``mm``) whatever the number of processes: "in flight"
    is the recorder's per-mm count, and each exerciser finds the mm's device
    state through its own per-mm index. The drivers' reads run as an observer
    (:func:`mmu_notifier.sync.observing`): no scheduling decisions of their own.
    """
    if mm is None or not mm.alive:
        return
    recorder = world.monitor.recorder
    seq = recorder.quiet_seq(mm)
    if seq is None:
        return
    found: list[tuple[str, InvariantViolation]] = []
    try:
        for name, ex in world.exercisers.items():
            if contract.DEVICE_TRANSLATIONS not in ex.capabilities:
                continue
            with sync.observing():  # the check's reads are no steps of the run: no decisions, the same interleavings
                translations = ex.translations(mm)
            found.extend((name, violation) for violation in check_coherence(mm, translations, (), name))
    except Exception:
        if recorder.quiet_seq(mm) != seq:
            return  # the mm's process freed a subscription the read was using (OS threads): not quiescent
        raise
    if recorder.quiet_seq(mm) != seq:
        return  # an invalidation of the mm began while the check read (OS threads): not a quiescent point
    world.quiescent_checks += 1
    for name, violation in found:
        key = f"{name}: {violation.check}: {violation.message}"
        if key not in world.seen:
            world.seen.add(key)
            record(world, name, InvariantViolation(
                violation.check, f"{violation.message} (seen at quiescent point {world.steps})"))


def check_world(world: JobWorld) -> None:
    """End-of-run rules, after every module unloaded: every invariant of the conformance kit
    (:class:`~mmu_notifier.invariants.Monitor`: pairing, frees, release, coherence, leaks,
    refcounts, WARNs) and no frame left allocated. A check that a driver's code makes raise is a fault
    of that driver; the rest of the checks still run."""
    count_allocations(world)
    try:
        found = world.monitor.check(settled=True)
    except Exception as error:
        driver = world.blame(error)
        if driver is None:
            raise
        world.driver_fault(driver, "the end-of-run checks", error)
        found = []
    for violation in found:
        text = str(violation)
        drivers = [name for name in world.stats if re.search(rf"\b{re.escape(name)}\b", text)]
        for name in drivers:
            record(world, name, violation)
        if not drivers:
            world.violations.append(text)
    kernel = world.kernel
    if kernel.memory.in_use():
        world.violations.append(f"{kernel.memory.in_use()} frames still allocated after every process exited")
