"""Run a workload: processes and the kernel's threads, on the deterministic scheduler or real threads.

A run is built as an explorer :class:`~mmu_notifier.explore.ScenarioInstance`:
one model thread per process plus a background thread (reclaim, migration,
aging), a finale that unloads every driver module (``synchronize``), and the
end-of-run checks. The deterministic mode executes it once under a seeded
random walk (same seed, same run, step for step); the threads mode runs the
same thread bodies on OS threads.

:func:`run` is what ``mmu-notifier run`` calls: the run goes on a worker
thread while the calling thread supervises it, so a driver call that does not
return within the watchdog's deadline ends the run with the summary of what
ran (a *hang* of that driver and call), and Ctrl-C ends it with the partial
summary (:class:`RunInterrupted`). The kernel would report the first as a
hung task ("blocked for more than N seconds"); the model stops there, because
a stuck thread cannot be unwound.

This module is the loop only: the machine a run executes on (drivers,
exercisers, shared state, end-of-run checks) is :mod:`.world`, what each
process step does is :mod:`.steps`, the summary document is :mod:`.summary`.
"""

from __future__ import annotations

import inspect
import random
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmu_notifier.explore import Execution, Kind, Outcome, RandomWalk, Scenario, ScenarioInstance, Timeline
from mmu_notifier.workload.model import Workload, WorkloadError
from mmu_notifier.workload.stats import DriverStats
from mmu_notifier.workload.steps import ProcessRunner, background
from mmu_notifier.workload.summary import document
from mmu_notifier.workload.world import JobWorld, check_world, count_allocations, load_drivers, new_world, unload

#: the default watchdog deadline of :func:`run`: a driver call in flight for longer is a hang
WATCHDOG_SECONDS = 60.0

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
    #: steps in which a driver's code raised (each fault is that driver's violation, its traceback in the
    #: driver's ``tracebacks``)
    failed_steps: int = 0
    #: drivers left out because their plugin is broken: name -> reason
    left_out: dict[str, str] | None = None
    #: the run did not finish: "hang" (the watchdog fired) or "interrupted" (Ctrl-C)
    stopped: str | None = None

    #: the deterministic run kept every step (``record``), so its timeline can be drawn
    recorded: bool = True
    #: the traceback of each exception no driver owns that ended a model thread's body on an OS thread (threads
    #: mode), by thread name; its one-line form is in :attr:`violations` (the deterministic mode puts the stack
    #: in the violation itself)
    tracebacks: dict[str, str] = field(default_factory=dict)

    @property
    def timeline(self) -> Timeline | None:
        """The per-thread timeline of a recorded deterministic run (built only when asked for)."""
        if self.outcome is None or not self.recorded:
            return None
        return Timeline.of(self.outcome, group_background=True)

    @property
    def events(self) -> int:
        """Process steps, background operations and driver callbacks."""
        return self.steps + self.callbacks

    @property
    def ok(self) -> bool:
        """No violation anywhere (known kernel behaviour a driver declared does not count), no driver left
        out, and the run finished."""
        return (not self.violations and not any(s.violations for s in self.drivers.values())
                and not self.left_out and self.stopped is None)


#: the thread of the kernel's own work (reclaim, migration, ageing), the last of a run's threads
BACKGROUND = "kswapd"


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
    instance.threads.append((BACKGROUND, lambda: background(world, rng)))
    instance.checks.append(lambda: check_world(world))
    return instance


def max_steps(workload: Workload) -> int:
    """The livelock guard of a deterministic run of ``workload``."""
    processes = sum(spec.count for spec in workload.processes)
    return max(MAX_STEPS, MAX_STEPS_PER_PROCESS * processes)


def _result(world: JobWorld, mode: str, seed: int, wall: float, violations: list[str], **more: object) -> RunResult:
    return RunResult(
        world.workload.name, mode, seed, world.stats, world.steps, world.skipped, world.tracer.callbacks,
        wall, violations, failed_steps=world.failed, left_out=dict(world.left_out),
        tracebacks=dict(sorted(world.tracebacks.items())), **more,  # type: ignore[arg-type]
    )


def run_deterministic(
    workload: Workload,
    seed: int,
    on_step: Callable[[int], None] | None = None,
    world_box: list[JobWorld] | None = None,
    record: bool = True,
) -> RunResult:
    """Run once under a seeded random walk: the same seed gives the same run (``world_box`` receives the world).

    With ``record`` every scheduling step is kept for the timeline; without it
    only counted, so memory does not grow with the run's length (the CLI records
    only for ``--timeline``). The run itself is the same either way.
    """
    worlds: list[JobWorld] = [] if world_box is None else world_box
    step_hook = [on_step]

    def build_once() -> ScenarioInstance:
        instance = build(worlds, workload)
        worlds[-1].on_step = step_hook[0]
        return instance

    scenario = Scenario(f"workload:{workload.name}", build_once, max_steps=max_steps(workload))
    started = time.perf_counter()
    # Without lockdep's acquisition sites (a third of a step's cost): the same run, step for step. A deadlock
    # report names the site and step where each held lock was taken, so a run that deadlocked is run again,
    # with the same seed and so the same schedule, keeping them; that run's world is the one reported.
    outcome = Execution(scenario, RandomWalk(seed), record=record, lock_sites=False).run()
    first = len(worlds) - 1
    if outcome.problem is not None and outcome.problem.kind == Kind.DEADLOCK:
        step_hook[0] = None  # progress was shown once
        again = Execution(scenario, RandomWalk(seed), record=record).run()
        if len(again.trace) == len(outcome.trace) and again.problem is not None:
            outcome, first = again, len(worlds) - 1
    wall = time.perf_counter() - started
    world = worlds[first]
    violations = list(world.violations)
    if outcome.problem is not None:
        problem = outcome.problem
        where = f" in thread {problem.thread}" if problem.thread else ""
        details = "".join(f"; {key}: {value}" for key, value in problem.details.items())
        text = f"{problem.kind}{where}: {problem.message}{details}"
        blamed = blame(world, text)
        for name in blamed:
            world.stats[name].violations.append(text)
        if not blamed:
            violations.append(text)
    return _result(
        world, "deterministic", seed, wall, violations,
        scheduler_steps=len(outcome.trace), outcome=outcome, recorded=record,
    )


def blame(world: JobWorld, text: str) -> list[str]:
    """The drivers a detector's report points at: named in it, or owning a file its sites are in.

    A driver owns the source files of its class and of the classes it derives
    from (outside the core), so a use after free whose access site is in the
    driver's callback is filed under that driver; with one driver loaded, it is that one.
    """
    names = list(world.stats)
    named = [n for n in names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)]
    if named:
        return named
    owners = []
    for ops in world.kernel.drivers:
        files = {
            "/".join(Path(inspect.getsourcefile(cls) or "").parts[-2:])
            for cls in type(ops.driver).__mro__
            if cls.__module__.split(".")[0] not in ("mmu_notifier", "builtins")
        }
        if any(f and f in text for f in files) and ops.name in world.stats:
            owners.append(ops.name)
    return owners or (names if len(names) == 1 else [])


def run_threads(
    workload: Workload,
    threads: int,
    on_step: Callable[[int], None] | None = None,
    world_box: list[JobWorld] | None = None,
) -> RunResult:
    """Run the same thread bodies on OS threads: the processes shared round-robin by ``threads`` lanes, and the
    background work (``kswapd``) on a thread of its own from the start, as the kernel's is a thread of its own
    (in a lane it began only once that lane's processes were done, and hardly overlapped any)."""
    worlds: list[JobWorld] = [] if world_box is None else world_box
    instance = build(worlds, workload)
    world = worlds[0]
    world.on_step = on_step
    lanes: list[list[tuple[str, Callable[[], object]]]] = [[] for _ in range(max(1, threads))]
    processes = [entry for entry in instance.threads if entry[0] != BACKGROUND]
    for index, entry in enumerate(processes):
        lanes[index % len(lanes)].append(entry)
    lanes.append([entry for entry in instance.threads if entry[0] == BACKGROUND])

    def lane(bodies: list[tuple[str, Callable[[], object]]]) -> None:
        for name, body in bodies:
            try:
                body()
            except Exception as error:  # reported as a violation, like the explorer's thread exception
                world.thread_errors.append(f"exception in {name}: {type(error).__name__}: {error}")
                world.tracebacks[name] = "".join(traceback.format_exception(error))

    started = time.perf_counter()
    workers = [threading.Thread(target=lane, args=(bodies,), daemon=True) for bodies in lanes]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert instance.finale is not None
    instance.finale()
    for checker in instance.checks:
        checker()
    wall = time.perf_counter() - started
    return _result(world, f"threads({threads})", workload.seed, wall, world.thread_errors + world.violations)


class RunInterrupted(Exception):
    """Ctrl-C stopped a supervised run; ``result`` is the summary of what ran until then."""

    def __init__(self, result: RunResult) -> None:
        super().__init__("interrupted")
        self.result = result


def _partial(world: JobWorld, mode: str, seed: int, wall: float, stopped: str, violation: str | None) -> RunResult:
    count_allocations(world)
    violations = world.thread_errors + world.violations
    if violation is not None:
        violations.append(violation)
    return _result(world, mode, seed, wall, violations, stopped=stopped)


def run(
    workload: Workload,
    seed: int,
    threads: int | None = None,
    on_step: Callable[[int], None] | None = None,
    watchdog: float | None = WATCHDOG_SECONDS,
    record: bool = True,
) -> RunResult:
    """Run on a worker thread, supervised: a driver call in flight for more than ``watchdog`` seconds ends
    the run as a hang of that driver (the result says ``stopped="hang"``); Ctrl-C raises
    :class:`RunInterrupted` with the partial result. ``threads=None`` is the deterministic mode
    (``record``: keep every step for a timeline, see :func:`run_deterministic`)."""
    box: list[JobWorld] = []
    done: list[RunResult] = []
    crashed: list[BaseException] = []
    mode = "deterministic" if threads is None else f"threads({threads})"

    def body() -> None:
        try:
            if threads is None:
                done.append(run_deterministic(workload, seed, on_step, world_box=box, record=record))
            else:
                done.append(run_threads(workload, threads, on_step, world_box=box))
        except BaseException as error:  # handed to the supervising thread
            crashed.append(error)

    worker = threading.Thread(target=body, name="mmu-notifier-run", daemon=True)
    started = time.perf_counter()
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.05)
            if watchdog is not None and box:
                late = box[0].tracer.overdue(watchdog)
                if late is not None:
                    world = box[0]
                    message = (f"hang: driver {late.driver!r}: {late.what} did not return within {watchdog:g} s "
                               f"(thread {late.thread}); the run stopped here")
                    if late.driver in world.stats:
                        world.stats[late.driver].violations.append(message)
                        message = ""
                    wall = time.perf_counter() - started
                    return _partial(world, mode, seed, wall, "hang", message or None)
    except KeyboardInterrupt:
        if not box:
            raise
        raise RunInterrupted(_partial(box[0], mode, seed, time.perf_counter() - started, "interrupted",
                                      "interrupted (Ctrl-C): the run stopped here")) from None
    if crashed:
        raise crashed[0]
    return done[0]


def validate_drivers(workload: Workload) -> list[str]:
    """The drivers a run of ``workload`` will use (the healthy ones), checked before anything runs:
    :class:`WorkloadError` if none is installed, or if a step names a driver the run does not have."""
    kernel, left_out = load_drivers(workload)
    names = kernel.drivers.names()
    if not names and not left_out:
        raise WorkloadError("no driver plugin is installed (entry-point group mmu_notifier.drivers)")
    known = set(names) | set(left_out)
    for p_index, process in enumerate(workload.processes):
        for s_index, step in enumerate(process.steps):
            if step.driver is not None and step.driver not in known:
                raise WorkloadError(
                    f"processes.{p_index}.steps.{s_index}.driver: no driver {step.driver!r} in this run "
                    f"(drivers: {', '.join(sorted(known)) or 'none'})"
                )
    return names


#: The old name of :func:`mmu_notifier.workload.summary.document`, kept importable for one release.
describe = document
