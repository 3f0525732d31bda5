"""Run a workload: processes and the kernel's threads, on the deterministic scheduler or real threads.

A run is built as an explorer :class:`~mmu_notifier.explore.ScenarioInstance`:
one model thread per process plus a background thread (reclaim, migration,
aging), a finale that unloads every driver module (``synchronize``), and the
end-of-run checks. The deterministic mode executes it once under a seeded
random walk (same seed, same run, step for step); the threads mode runs the
same thread bodies on OS threads.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmu_notifier import sync
from mmu_notifier.errors import KernelError
from mmu_notifier.exerciser import Exerciser, Handle
from mmu_notifier.explore import Execution, Outcome, RandomWalk, Scenario, ScenarioInstance, Timeline
from mmu_notifier.invariants import Monitor
from mmu_notifier.kernel import Kernel
from mmu_notifier.mm import MM, RW, Prot
from mmu_notifier.workload.model import Process, Step, Workload, WorkloadError
from mmu_notifier.workload.stats import DriverStats, StatsTracer

#: the livelock guard of a deterministic run, in scheduler steps
MAX_STEPS = 5_000_000


@dataclass
class Region:
    """A range a process mapped: ``[start, start + pages * page_size)``."""

    start: int
    pages: int


@dataclass
class RunResult:
    """Everything a summary needs."""

    workload: str
    mode: str
    seed: int
    drivers: dict[str, DriverStats]
    steps: int
    skipped: int
    callbacks: int
    wall: float
    violations: list[str]
    scheduler_steps: int = 0
    #: the deterministic execution, kept to draw its timeline on request
    outcome: Outcome | None = None

    @property
    def timeline(self) -> Timeline | None:
        """The per-thread timeline of a deterministic run (built only when asked for)."""
        return None if self.outcome is None else Timeline.of(self.outcome)

    @property
    def events(self) -> int:
        """Process steps, background operations and driver callbacks."""
        return self.steps + self.callbacks

    @property
    def ok(self) -> bool:
        """No violation anywhere."""
        return not self.violations and not any(s.violations for s in self.drivers.values())


@dataclass
class World:
    """One execution's fresh state: a kernel, the drivers' exercisers and the counters."""

    workload: Workload
    kernel: Kernel
    exercisers: dict[str, Exerciser]
    stats: dict[str, DriverStats]
    tracer: StatsTracer
    monitor: Monitor
    live: list[MM] = field(default_factory=list)
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


def new_world(workload: Workload) -> World:
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
    return World(workload, kernel, exercisers, stats, tracer, Monitor(kernel, exercisers.values()))


class ProcessRunner:
    """One process: its mm, its regions and its device handles, stepping through its spec."""

    def __init__(self, world: World, spec: Process, number: int) -> None:
        self.world = world
        self.spec = spec
        self.name = f"{spec.name}{number}"
        self.mm: MM | None = None
        self.regions: list[Region] = []
        #: open device handles per driver, oldest first (each attach is another open)
        self.handles: dict[str, list[Handle]] = {}

    def run(self) -> None:
        """The thread body: every repetition of every step, then clean up like an exiting process."""
        for _ in range(self.spec.repeat):
            for step in self.spec.steps:
                self.step(step)
                self.world.count_step()
        self.detach(None, every=True)
        if self.mm is not None:
            self._exit()

    def _live_mm(self) -> MM:
        if self.mm is None:  # a new incarnation after an exit
            self.mm = self.world.monitor.track_mm(MM(self.world.kernel))
            self.regions = []
            self.world.live.append(self.mm)
            self.world.every_mm.append(self.mm)
        return self.mm

    def _region(self, step: Step) -> Region | None:
        return self.regions[step.region % len(self.regions)] if self.regions else None

    def _drivers(self, step: Step) -> list[str]:
        names = list(self.world.exercisers)
        return [step.driver] if step.driver in names else names if step.driver is None else []

    def step(self, step: Step) -> None:
        """Do one step; a step whose precondition is missing, or that the kernel refuses, is skipped."""
        action = getattr(self, f"_op_{step.op}")
        try:
            done = action(step)
        except KernelError:
            done = False
        if done is False:
            self.world.skipped += 1

    # -- memory -----------------------------------------------------------
    def _op_mmap(self, step: Step) -> None:
        mm = self._live_mm()
        self.regions.append(Region(mm.mmap(step.pages * mm.page_size), step.pages))

    def _with_region(self, step: Step, action: Callable[[MM, Region], object]) -> bool:
        region = self._region(step)
        if region is None or self.mm is None:
            return False
        action(self.mm, region)
        return True

    def _op_touch(self, step: Step) -> bool:
        def touch(mm: MM, region: Region) -> None:
            for page in range(region.pages):
                mm.fault(region.start + page * mm.page_size, write=step.write)

        return self._with_region(step, touch)

    def _op_mprotect(self, step: Step) -> bool:
        prot = RW if step.write else Prot.READ
        return self._with_region(step, lambda mm, r: mm.mprotect(r.start, r.pages * mm.page_size, prot))

    def _op_madvise(self, step: Step) -> bool:
        return self._with_region(step, lambda mm, r: mm.madvise_dontneed(r.start, r.pages * mm.page_size))

    def _op_munmap(self, step: Step) -> bool:
        region = self._region(step)
        if not self._with_region(step, lambda mm, r: mm.munmap(r.start, r.pages * mm.page_size)):
            return False
        self.regions.remove(region)  # type: ignore[arg-type]
        return True

    def _op_mremap(self, step: Step) -> bool:
        def grow(mm: MM, region: Region) -> None:
            size = mm.page_size
            region.start = mm.mremap(region.start, region.pages * size, (region.pages + step.pages) * size)
            region.pages += step.pages

        return self._with_region(step, grow)

    def _op_fork(self, step: Step) -> bool:
        def fork(mm: MM, region: Region) -> None:
            child = mm.fork()
            try:
                child.fault(region.start, write=True)  # breaks COW in the child
            except KernelError:
                pass  # a read-only region: the child only reads
            finally:
                child.exit()

        return self._with_region(step, fork)

    def _op_soft_dirty(self, step: Step) -> bool:
        if self.mm is None:
            return False
        self.mm.clear_soft_dirty()
        return True

    def _op_oom_reap(self, step: Step) -> bool:
        if self.mm is None:
            return False
        self.mm.oom_reap()
        return True

    def _op_exit(self, step: Step) -> bool:
        if self.mm is None:
            return False
        self._exit()
        return True

    def _exit(self) -> None:
        assert self.mm is not None
        self.world.live.remove(self.mm)
        self.mm.exit()
        self.mm = None

    # -- devices ----------------------------------------------------------
    def _op_attach(self, step: Step) -> bool:
        mm = self._live_mm()
        done = False
        for name in self._drivers(step):
            handle = self.world.monitor.attached(name, self.world.exercisers[name].attach(mm))
            self.handles.setdefault(name, []).append(handle)
            stats = self.world.stats[name]
            stats.subscriptions.add(handle.subscription)
            stats.peak_users = max(stats.peak_users, handle.subscription.users)
            done = True
        return done

    def _op_map(self, step: Step) -> bool:
        region = self._region(step)
        if region is None or self.mm is None:
            return False
        end = region.start + region.pages * self.mm.page_size
        for name in self._drivers(step):
            for handle in self.handles.get(name, ()):
                self.world.exercisers[name].map_range(handle, region.start, end)
        return True

    def _op_access(self, step: Step) -> bool:
        region = self._region(step)
        if region is None or self.mm is None:
            return False
        page_size = self.mm.page_size
        for name in self._drivers(step):
            if not self.handles.get(name):
                continue
            handle = self.handles[name][0]
            stats = self.world.stats[name]
            for page in range(region.pages):
                try:
                    pfn = self.world.exercisers[name].access(handle, region.start + page * page_size, step.write)
                except KernelError:
                    pfn = None
                if pfn is None:
                    stats.retries += 1
                else:
                    stats.device_faults += 1
        return True

    def _op_detach(self, step: Step) -> bool:
        return self.detach(step.driver, every=False)

    def detach(self, only: str | None, every: bool = True) -> bool:
        """Close the newest handle of each driver (or of ``only``); with ``every``, all of them."""
        done = False
        for name, handles in self.handles.items():
            if only is not None and name != only:
                continue
            while handles:
                handle = handles.pop()
                self.world.exercisers[name].detach(handle)
                self.world.monitor.detached(name, handle)
                done = True
                if not every:
                    break
        return done


def background(world: World, rng: random.Random) -> None:
    """The kernel's own threads: reclaim, migrate and age random live pages."""
    plan = world.workload.background
    ops = ["reclaim"] * plan.reclaim + ["migrate"] * plan.migrate + ["age"] * plan.age
    rng.shuffle(ops)
    for op in ops:
        sync.yield_now()
        candidates = [mm for mm in world.live if mm.alive]
        if not candidates:
            continue
        mm = rng.choice(candidates)
        if not mm.mmget_not_zero():
            continue
        try:
            with mm.page_table_lock:
                pages = sorted(mm.page_table.entries)
            if pages:
                addr = rng.choice(pages) << mm.page_shift
                if op == "reclaim":
                    mm.reclaim(addr)
                elif op == "migrate":
                    mm.migrate(addr)
                else:
                    mm.clear_flush_young(addr)
                world.count_step()
        finally:
            mm.mmput()


def unload(world: World) -> None:
    """Module unload: every driver drops its device state and calls ``synchronize``."""
    for exerciser in world.exercisers.values():
        exerciser.unload()


def check(world: World) -> None:
    """End-of-run rules, after every module unloaded: every invariant of the conformance kit
    (:class:`~mmu_notifier.invariants.Monitor`: pairing, frees, release, coherence, leaks,
    refcounts, WARNs) and no frame left allocated."""
    for violation in world.monitor.check(settled=True):
        text = str(violation)
        drivers = [name for name in world.stats if re.search(rf"\b{re.escape(name)}\b", text)]
        for name in drivers:
            world.stats[name].violations.append(text)
        if not drivers:
            world.violations.append(text)
    kernel = world.kernel
    if kernel.memory.in_use():
        world.violations.append(f"{kernel.memory.in_use()} frames still allocated after every process exited")


def build(world_box: list[World], workload: Workload) -> ScenarioInstance:
    """A fresh world as an explorer scenario instance (``world_box`` receives it)."""
    world = new_world(workload)
    world_box.append(world)
    instance = ScenarioInstance(finale=lambda: unload(world))
    number = 0
    for spec in workload.processes:
        for _ in range(spec.count):
            runner = ProcessRunner(world, spec, number)
            instance.threads.append((runner.name, runner.run))
            number += 1
    rng = random.Random(workload.seed)
    instance.threads.append(("kswapd", lambda: background(world, rng)))
    instance.checks.append(lambda: check(world))
    return instance


def run_deterministic(workload: Workload, seed: int, on_step: Callable[[int], None] | None = None) -> RunResult:
    """Run once under a seeded random walk: the same seed gives the same run."""
    worlds: list[World] = []

    def build_once() -> ScenarioInstance:
        instance = build(worlds, workload)
        worlds[-1].on_step = on_step
        return instance

    scenario = Scenario(f"workload:{workload.name}", build_once, max_steps=MAX_STEPS)
    started = time.perf_counter()
    outcome = Execution(scenario, RandomWalk(seed)).run()
    wall = time.perf_counter() - started
    world = worlds[0]
    violations = list(world.violations)
    if outcome.problem is not None:
        problem = outcome.problem
        where = f" in thread {problem.thread}" if problem.thread else ""
        details = "".join(f"; {key}: {value}" for key, value in problem.details.items())
        violations.append(f"{problem.kind}{where}: {problem.message}{details}")
    return RunResult(
        workload.name, "deterministic", seed, world.stats, world.steps, world.skipped, world.tracer.callbacks,
        wall, violations, scheduler_steps=len(outcome.trace), outcome=outcome,
    )


def run_threads(workload: Workload, threads: int, on_step: Callable[[int], None] | None = None) -> RunResult:
    """Run the same thread bodies on ``threads`` OS threads (processes shared round-robin)."""
    worlds: list[World] = []
    instance = build(worlds, workload)
    world = worlds[0]
    world.on_step = on_step
    errors: list[str] = []
    lanes: list[list[tuple[str, Callable[[], object]]]] = [[] for _ in range(max(1, threads))]
    for index, entry in enumerate(instance.threads):
        lanes[index % len(lanes)].append(entry)

    def lane(bodies: list[tuple[str, Callable[[], object]]]) -> None:
        for name, body in bodies:
            try:
                body()
            except Exception as error:  # reported as a violation, like the explorer's thread exception
                errors.append(f"exception in {name}: {type(error).__name__}: {error}")

    started = time.perf_counter()
    workers = [threading.Thread(target=lane, args=(bodies,)) for bodies in lanes]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert instance.finale is not None
    instance.finale()
    for checker in instance.checks:
        checker()
    wall = time.perf_counter() - started
    return RunResult(
        workload.name, f"threads({threads})", workload.seed, world.stats, world.steps, world.skipped,
        world.tracer.callbacks, wall, errors + world.violations,
    )


def validate_drivers(workload: Workload) -> list[str]:
    """The drivers a run of ``workload`` will use; :class:`WorkloadError` before anything runs."""
    kernel = load_drivers(workload)
    names = kernel.drivers.names()
    if not names:
        raise WorkloadError("no driver plugin is installed (entry-point group mmu_notifier.drivers)")
    return names


def describe(result: RunResult) -> dict[str, Any]:
    """A JSON-ready summary document."""
    totals = DriverStats()
    for stats in result.drivers.values():
        totals.subscriptions |= stats.subscriptions
        totals.freed += stats.freed
        totals.peak_users = max(totals.peak_users, stats.peak_users)
        totals.invalidations.update(stats.invalidations)
        totals.refusals += stats.refusals
        totals.releases += stats.releases
        totals.device_faults += stats.device_faults
        totals.retries += stats.retries
        totals.violations += stats.violations
    return {
        "workload": result.workload,
        "mode": result.mode,
        "seed": result.seed,
        "ok": result.ok,
        "drivers": {name: stats.to_json() for name, stats in sorted(result.drivers.items())},
        "totals": totals.to_json(),
        "steps": result.steps,
        "skipped_steps": result.skipped,
        "callbacks": result.callbacks,
        "scheduler_steps": result.scheduler_steps,
        "events": result.events,
        "wall_seconds": round(result.wall, 4),
        "events_per_second": round(result.events / result.wall, 1) if result.wall else None,
        "violations": result.violations,
    }
