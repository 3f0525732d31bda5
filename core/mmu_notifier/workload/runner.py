"""Run a workload: processes and the kernel's threads, on the deterministic scheduler or real threads.

A run is built as an explorer :class:`~mmu_notifier.explore.ScenarioInstance`:
one model thread per process plus a background thread (reclaim, migration,
aging), a finale that unloads every driver module (``synchronize``), and the
end-of-run checks. The deterministic mode executes it once under a seeded
random walk (same seed, same run, step for step); the threads mode runs the
same thread bodies on OS threads.

This module is the loop only: the machine a run executes on (drivers,
exercisers, shared state, end-of-run checks) is :mod:`.world`, what each
process step does is :mod:`.steps`, the summary document is :mod:`.summary`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mmu_notifier.explore import Execution, Outcome, RandomWalk, Scenario, ScenarioInstance, Timeline
from mmu_notifier.workload.model import Workload, WorkloadError
from mmu_notifier.workload.stats import DriverStats
from mmu_notifier.workload.steps import ProcessRunner, background
from mmu_notifier.workload.summary import document
from mmu_notifier.workload.world import JobWorld, check_world, load_drivers, new_world, unload

#: the livelock guard of a deterministic run, in scheduler steps: at least this many, and
#: ``MAX_STEPS_PER_PROCESS`` per process (a run of 10,000 processes is as legitimate as one of 10)
MAX_STEPS = 5_000_000
MAX_STEPS_PER_PROCESS = 50_000


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

    #: the deterministic run kept every step (``record``), so its timeline can be drawn
    recorded: bool = True

    @property
    def timeline(self) -> Timeline | None:
        """The per-thread timeline of a recorded deterministic run (built only when asked for)."""
        return None if self.outcome is None or not self.recorded else Timeline.of(self.outcome)

    @property
    def events(self) -> int:
        """Process steps, background operations and driver callbacks."""
        return self.steps + self.callbacks

    @property
    def ok(self) -> bool:
        """No violation anywhere (known kernel behaviour a driver declared does not count)."""
        return not self.violations and not any(s.violations for s in self.drivers.values())


def build(world_box: list[JobWorld], workload: Workload) -> ScenarioInstance:
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
    instance.checks.append(lambda: check_world(world))
    return instance


def max_steps(workload: Workload) -> int:
    """The livelock guard of a deterministic run of ``workload``."""
    processes = sum(spec.count for spec in workload.processes)
    return max(MAX_STEPS, MAX_STEPS_PER_PROCESS * processes)


def run_deterministic(
    workload: Workload, seed: int, on_step: Callable[[int], None] | None = None, record: bool = True
) -> RunResult:
    """Run once under a seeded random walk: the same seed gives the same run.

    With ``record`` every scheduling step is kept for the timeline; without it
    only counted, so memory does not grow with the run's length (the CLI records
    only for ``--timeline``). The run itself is the same either way.
    """
    worlds: list[JobWorld] = []

    def build_once() -> ScenarioInstance:
        instance = build(worlds, workload)
        worlds[-1].on_step = on_step
        return instance

    scenario = Scenario(f"workload:{workload.name}", build_once, max_steps=max_steps(workload))
    started = time.perf_counter()
    outcome = Execution(scenario, RandomWalk(seed), record=record).run()
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
        wall, violations, scheduler_steps=len(outcome.trace), outcome=outcome, recorded=record,
    )


def run_threads(workload: Workload, threads: int, on_step: Callable[[int], None] | None = None) -> RunResult:
    """Run the same thread bodies on ``threads`` OS threads (processes shared round-robin)."""
    worlds: list[JobWorld] = []
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


#: The old name of :func:`mmu_notifier.workload.summary.document`, kept importable for one release.
describe = document
