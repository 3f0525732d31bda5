"""``explore`` and ``replay``: run a scenario under a strategy and report what was found.

An exploration runs executions until the schedule budget, the time budget or
the strategy (an exhausted DFS) ends it, stopping early at the first real bug
unless told otherwise. Predictive findings (lock-order inversions) do not stop
it: a later schedule may show the deadlock itself. Each distinct finding
(kind plus where it showed) keeps the first schedule that showed it, then gets
a minimised schedule, a timeline and a reproduction rate over several replays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmu_notifier import sync
from mmu_notifier.errors import UsageError
from mmu_notifier.explore._describe import describe
from mmu_notifier.explore._dfs import BoundedDFS, Exhaustive
from mmu_notifier.explore._findings import Problem
from mmu_notifier.explore._minimise import Minimised, minimise
from mmu_notifier.explore._portfolio import Portfolio
from mmu_notifier.explore._scenario import Scenario
from mmu_notifier.explore._schedule import (
    DivergenceError,
    Schedule,
    StaleScheduleError,
    scenario_fingerprint,
    trace_fingerprint,
)
from mmu_notifier.explore._scheduler import BLOCKED, DONE, RUN, STEP_BOUND, WOKEN, Execution, ModelThread, Outcome
from mmu_notifier.explore._stats import Stats
from mmu_notifier.explore._strategies import PCT, RandomWalk, Replay, Strategy
from mmu_notifier.explore._timeline import Timeline

STRATEGIES = ("portfolio", "random", "pct", "dfs", "dpor", "exhaustive")
#: why an exploration stopped, as its header says it
STOP_FIRST, STOP_BUDGET, STOP_TIME, STOP_EXHAUSTED = "first finding", "budget", "time budget", "exhausted"


class NondeterministicScenarioError(RuntimeError):
    """The same decisions led to different choices: the scenario depends on something outside the model."""


def make_strategy(
    name: str, seed: int = 0, depth: int = 2, preemptions: int | None = None, budget: int = 1000
) -> Strategy:
    """A strategy by its CLI name.

    ``preemptions`` bounds ``dfs`` and the portfolio's exhaustive phases
    (default 2) and, if given, ``dpor`` (default unbounded); ``budget`` is what
    a portfolio shares among its phases.
    """
    if name == "portfolio":
        return Portfolio(budget, seed, 2 if preemptions is None else preemptions)
    if name == "random":
        return RandomWalk(seed)
    if name == "pct":
        return PCT(depth, seed)
    if name == "dfs":
        return BoundedDFS(2 if preemptions is None else preemptions)
    if name == "dpor":
        from mmu_notifier.explore._dpor import DPOR  # the largest engine module: imported when chosen

        return DPOR(preemptions)
    if name == "exhaustive":
        return Exhaustive()
    raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")


def _require_scenario(scenario: object, caller: str) -> Scenario:
    """``scenario`` itself, or a :class:`UsageError` saying where names are looked up.

    The engine knows no scenario by name: the library that does
    (:mod:`mmu_notifier.scenarios`) imports the model, which the engine must not.
    """
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, str):
        raise UsageError(
            f"mmu_notifier.explore.{caller}() takes a Scenario, not the name {scenario!r}: "
            f"use mmu_notifier.scenarios.{caller}({scenario!r}, ...) to look it up by name"
        )
    raise UsageError(f"mmu_notifier.explore.{caller}() takes a Scenario, not {type(scenario).__name__} {scenario!r}")


def schedule_of(scenario: Scenario, outcome: Outcome) -> str:
    """The schedule string of an execution: it names the scenario and where it comes from."""
    sfp = scenario_fingerprint(scenario.name, scenario.version, outcome.declared)
    return str(Schedule(scenario.name, sfp, trace_fingerprint(outcome.trace), outcome.choices, scenario.source))


def replay_command(scenario: str, schedule: str) -> str:
    """The shell command that replays ``schedule`` (it names its scenario and source itself)."""
    del scenario  # the schedule string names it
    return f"mmu-notifier replay {schedule}"


@dataclass
class Finding:
    """One distinct problem an exploration found, with everything needed to chase it."""

    problem: Problem
    scenario: str
    schedule: str
    steps: int
    preemptions: int
    found_after: int
    timeline: Timeline
    minimised: str | None = None
    minimised_steps: int = 0
    minimised_preemptions: int = 0
    reproduced: tuple[int, int] = (0, 0)
    #: what the minimiser did, in one line (None: it did not run)
    minimiser: str | None = None

    @property
    def replay(self) -> str:
        """The command that replays the (minimised, if any) schedule."""
        return replay_command(self.scenario, self.minimised or self.schedule)

    def text(self, timeline: bool = True) -> str:
        """The report: what, where, the schedule and its replay command, the timeline."""
        p = self.problem
        label = "PREDICTED" if p.predictive else "BUG"
        who = f" in thread {p.thread}" if p.thread else ""
        of_run = " of the minimised schedule" if self.minimised and self.minimised != self.schedule else ""
        lines = [
            f"{label} {p.kind}{who} at step {p.step}{of_run} (found after {self.found_after} schedules)",
            f"  {p.message}",
            *(f"  {key}: {value}" for key, value in p.details.items()),
            f"schedule:   {self.schedule}  ({self.preemptions} preemptions, {self.steps} steps)",
        ]
        if self.minimised and self.minimised != self.schedule:
            lines.append(
                f"minimised:  {self.minimised}  ({self.minimised_preemptions} preemptions, "
                f"{self.minimised_steps} steps)"
            )
        if self.minimiser:
            lines.append(f"minimiser:  {self.minimiser}")
        lines.append(f"replay:     {self.replay}")
        if self.reproduced[1]:
            lines.append(f"reproduced: {self.reproduced[0]}/{self.reproduced[1]} replays")
        if timeline:
            lines += ["timeline:", self.timeline.text()]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the finding."""
        p = self.problem
        return {
            "kind": p.kind.value,
            "predictive": p.predictive,
            "message": p.message,
            "thread": p.thread,
            "step": p.step,
            "details": p.details,
            "schedule": self.schedule,
            "steps": self.steps,
            "preemptions": self.preemptions,
            "minimised": self.minimised,
            "minimised_steps": self.minimised_steps if self.minimised else None,
            "minimised_preemptions": self.minimised_preemptions if self.minimised else None,
            "minimiser": self.minimiser,
            "replay": self.replay,
            "reproduced": list(self.reproduced),
            "found_after": self.found_after,
            "timeline": self.timeline.to_json(),
        }


@dataclass
class Exploration:
    """The result of :func:`explore`: statistics and findings (real bugs first)."""

    scenario: str
    strategy: str
    stats: Stats
    findings: list[Finding] = field(default_factory=list)
    #: the strategy had nothing left (an exhausted DFS): the bounded search is complete
    complete: bool = False
    #: why the search stopped: "first finding", "budget", "time budget" or "exhausted"
    stopped: str = STOP_BUDGET
    #: what the schedules run cover ("exhaustive to 2 preemptions", "1,000 sampled schedules ...")
    coverage: str = ""
    #: DPOR: the explored traces (one execution each); None for other strategies
    traces: int | None = None
    #: a preemption bound cut the search (a complete search is then complete only within the bound)
    bounded: bool = False
    #: DPOR: planned steps that could not run (the scenario breaks the reduction's assumptions)
    unfollowed: int = 0

    @property
    def bugs(self) -> list[Finding]:
        """Findings from executions that actually failed."""
        return [f for f in self.findings if not f.problem.predictive]

    @property
    def failed(self) -> bool:
        """True when anything was found, predicted problems included."""
        return bool(self.findings)

    @property
    def verdict(self) -> str:
        """One line saying what was covered and what it showed.

        "exhaustive to 2 preemptions: clean" only when a bounded search ended;
        "N sampled schedules, not exhaustive: no finding" when schedules were sampled.
        """
        if self.traces is not None:
            return self._dpor_verdict()
        if self.bugs:
            return f"{len(self.bugs)} bug(s) found after {self.stats.schedules:,} schedules"
        clean = "clean" if self.complete or self.coverage.startswith("exhaustive") else "no finding"
        found = f"; {len(self.findings)} predicted problem(s)" if self.findings else ""
        return f"{self.coverage}: {clean}{found}"

    def _dpor_verdict(self) -> str:
        """DPOR: "all N traces explored: clean" (a proof under the model's conventions), "budget spent
        after N traces: not complete", or the same qualified by the preemption bound."""
        found = f"{len(self.bugs)} bug(s)" if self.bugs else ("predicted problem(s)" if self.findings else "clean")
        n = self.traces
        if self.unfollowed:
            return (
                f"{found} after {n} traces, but {self.unfollowed} planned step(s) could not run (the scenario "
                f"touches shared state the reduction does not see): not complete"
            )
        if self.bounded:
            if self.complete:
                return f"bounded: all {n} traces within the preemption bound explored: {found} within the bound"
            return f"bounded: stopped after {n} traces: {found}, not complete"
        if self.complete:
            return f"all {n} traces explored: {found}"
        if self.findings:
            return f"{found} after {n} traces: not complete"
        return f"budget spent after {n} traces: not complete"

    def text(self) -> str:
        """The whole report: header (with why the search stopped), statistics, verdict, findings."""
        why = {
            STOP_FIRST: "stopped at the first finding",
            STOP_BUDGET: "the schedule budget is spent",
            STOP_TIME: "the time budget is spent",
            STOP_EXHAUSTED: "the search is exhausted",
        }.get(self.stopped, self.stopped)
        head = f"explored {self.scenario} with {self.strategy}: {self.verdict}"
        parts = [head, f"  {why} after {self.stats.schedules:,} schedules", self.stats.text()]
        for finding in self.findings:
            parts.append(finding.text())
        return "\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the result."""
        return {
            "scenario": self.scenario,
            "strategy": self.strategy,
            "complete": self.complete,
            "stopped": self.stopped,
            "coverage": self.coverage,
            "traces": self.traces,
            "bounded": self.bounded,
            "unfollowed": self.unfollowed,
            "verdict": self.verdict,
            "stats": self.stats.to_json(),
            "findings": [f.to_json() for f in self.findings],
        }


def explore(
    scenario: Scenario,
    strategy: str | Strategy = "portfolio",
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
    progress: Callable[[Stats], None] | None = None,
    progress_every: float = 0.5,
) -> Exploration:
    """Explore ``scenario`` and return the statistics and findings.

    ``strategy`` is ``"portfolio"`` (the default: bounded DFS up to
    ``preemptions``, then PCT at rising depth, then random, sharing ``budget``),
    ``"random"`` (seeded by ``seed``), ``"pct"`` (bug depth ``depth``),
    ``"dfs"`` (preemption bound ``preemptions``, default 2), ``"dpor"``
    (optimal DPOR: every Mazurkiewicz trace once; bounded only if
    ``preemptions`` is given), ``"exhaustive"`` (every interleaving, no
    reduction) or a :class:`Strategy`. At most ``budget`` schedules run, and
    none starts after ``time_budget`` seconds. Each real bug is minimised with up to
    ``minimise_budget`` extra schedules (0: not at all) and replayed
    ``reproduce`` times. ``progress`` is called with the running statistics
    at most every ``progress_every`` seconds.

    ``scenario`` is a :class:`Scenario`; a name raises :class:`UsageError`
    (``mmu_notifier.scenarios.explore`` looks names up).
    """
    sc = _require_scenario(scenario, "explore")
    if budget < 1:
        raise ValueError(f"budget must be at least 1 schedule, got {budget}")
    strat = strategy if isinstance(strategy, Strategy) else make_strategy(strategy, seed, depth, preemptions, budget)
    stopped = STOP_BUDGET
    if strat.records:
        warm_up(sc, strat)
    stats = Stats()
    found: dict[tuple[str, str], tuple[Problem, Outcome, tuple[int, ...] | None, int]] = {}
    report = getattr(strat, "report", None)
    distinct: set[int] = set()
    start = time.perf_counter()
    deadline = start + time_budget if time_budget is not None else None
    next_progress = start + progress_every
    while stats.schedules < budget:
        now = time.perf_counter()
        if deadline is not None and now >= deadline:
            stopped = STOP_TIME
            break
        if progress is not None and now >= next_progress:
            stats.elapsed = now - start
            progress(stats)
            next_progress = now + progress_every
        if not strat.start():
            stopped = STOP_EXHAUSTED
            break
        outcome = Execution(sc, strat, max_steps).run()
        strat.finish(outcome)
        choices = outcome.choices
        distinct.add(hash(choices))
        stats.count(len(choices), outcome.status == STEP_BOUND)
        if outcome.problem is not None or outcome.predicted is not None:
            stats.failing += 1
            # a strategy with its own scheduler modes says which schedule shows each problem
            shown = report(outcome) if report is not None else [
                (p, None) for p in (outcome.problem, outcome.predicted) if p is not None
            ]
            for p, steps in shown:
                found.setdefault(p.signature, (p, outcome, steps, stats.schedules))
            if stop_on_first and outcome.problem is not None:
                stopped = STOP_FIRST
                break
    if strat.nondeterminism:
        raise NondeterministicScenarioError(f"scenario {sc.name}: {strat.nondeterminism}")
    stats.distinct = len(distinct)
    stats.pruned = strat.pruned
    stats.elapsed = time.perf_counter() - start
    ordered = sorted(found.values(), key=lambda f: (f[0].predictive, f[3]))
    findings = [
        _finding(sc, p, _shown(sc, p, out, steps, max_steps), n, minimise_budget, reproduce, max_steps)
        for p, out, steps, n in ordered
    ]
    traces = getattr(strat, "traces", None)
    bounded = bool(getattr(strat, "bounded", False))
    unfollowed = int(getattr(strat, "unexecutable", 0))
    complete = strat.exhausted and not unfollowed
    return Exploration(
        sc.name, strat.describe(), stats, findings, complete,
        stopped=stopped, coverage=_coverage(strat, stats), traces=traces, bounded=bounded, unfollowed=unfollowed,
    )


def _coverage(strat: Strategy, stats: Stats) -> str:
    """What the schedules an exploration ran cover, in the verdict's words."""
    if isinstance(strat, Portfolio):
        return strat.coverage()
    if isinstance(strat, BoundedDFS):
        if strat.exhausted:
            return f"exhaustive to {strat.bound} preemption{'' if strat.bound == 1 else 's'}"
        return f"{stats.schedules:,} schedules of a search to {strat.bound} preemptions, not complete"
    if strat.exhausted:
        return f"{strat.describe()} exhausted after {stats.schedules:,} schedules"
    return f"{stats.schedules:,} sampled schedules, not exhaustive"


def warm_up(sc: Scenario, strategy: Strategy) -> None:
    """Build ``sc`` once, untimed and unrun, before a strategy that names objects by their creation.

    Scenarios fill per-process caches on their first build (a driver loaded
    once, with its own primitives); built for the first time inside the first
    recorded execution, those would shift the names of that execution's
    primitives against every later one.
    """
    with sync.use_backend(Execution(sc, strategy)):
        sc.build()


def _shown(
    sc: Scenario, problem: Problem, found: Outcome, steps: tuple[int, ...] | None, max_steps: int | None
) -> Outcome:
    """The execution to report: ``found``, or the replay of the schedule the strategy gave for it.

    A strategy running the scheduler in its own modes (DPOR) gives a schedule
    for the default scheduler; if that does not show the problem again (a
    scenario breaking the reduction's assumptions), the execution as found is
    reported, with a note that its schedule may not replay.
    """
    if steps is None:
        return found
    strat = Replay(steps)
    limit = max(max_steps or sc.max_steps, len(steps))
    outcome = Execution(sc, strat, limit).run()
    strat.finish(outcome)
    shown = [p for p in (outcome.problem, outcome.predicted) if p is not None]
    if strat.divergence is None and any(p.signature == problem.signature for p in shown):
        return outcome
    problem.details["note"] = (
        f"found under the reduction's scheduler modes; the default scheduler does not show it again "
        f"({strat.divergence or 'another outcome'}), so the schedule may not replay"
    )
    return found


def _finding(
    sc: Scenario,
    problem: Problem,
    outcome: Outcome,
    found_after: int,
    minimise_budget: int,
    reproduce: int,
    max_steps: int | None,
) -> Finding:
    schedule = schedule_of(sc, outcome)
    problem = next(
        (p for p in (outcome.problem, outcome.predicted) if p is not None and p.signature == problem.signature),
        problem,
    )
    finding = Finding(
        problem, sc.name, schedule, len(outcome.trace), outcome.preemptions, found_after, Timeline.of(outcome)
    )
    if minimise_budget and not problem.predictive:
        result: Minimised = minimise(sc, problem.signature, outcome, minimise_budget, max_steps)
        best = result.outcome
        finding.minimised = schedule_of(sc, best)
        finding.minimised_steps = len(best.trace)
        finding.minimised_preemptions = best.preemptions
        finding.minimiser = result.text(outcome)
        finding.timeline = Timeline.of(best)
        if best.problem is not None:  # the report describes the run its timeline and replay show
            finding.problem = best.problem
    if reproduce:
        target = finding.minimised or schedule
        hits = 0
        for _ in range(reproduce):
            again = replay(sc, target, max_steps).outcome
            shown = [p for p in (again.problem, again.predicted) if p is not None]
            hits += any(p.signature == problem.signature for p in shown)
        finding.reproduced = (hits, reproduce)
    return finding


@dataclass
class Replayed:
    """The result of :func:`replay`: the execution, its problem and its timeline."""

    scenario: str
    schedule: str
    outcome: Outcome

    @property
    def problem(self) -> Problem | None:
        """The real problem of the run, else its predicted one, else None."""
        return self.outcome.problem or self.outcome.predicted

    @property
    def timeline(self) -> Timeline:
        """The per-thread timeline of the replayed run."""
        return Timeline.of(self.outcome)

    def text(self) -> str:
        """A report of the replay."""
        p = self.problem
        head = f"replayed {self.scenario}: {len(self.outcome.trace)} steps, {self.outcome.status}" + (
            f"; {'PREDICTED' if p.predictive else 'BUG'} {p.kind}: {p.message}" if p else "; no problem"
        )
        details = [f"  {k}: {v}" for k, v in p.details.items()] if p else []
        return "\n".join([head, *details, self.timeline.text()])


_STATE_NAMES = {RUN: "runnable", BLOCKED: "blocked", WOKEN: "woken", DONE: "done"}


@dataclass(frozen=True, slots=True)
class ThreadState:
    """One thread as ``replay --step`` shows it before a step: state, pending operation, locks held."""

    name: str
    state: str
    op: str
    resource: str
    held: tuple[str, ...]


def thread_states(ex: Execution) -> list[ThreadState]:
    """Every thread of an execution as it stands now (done threads included)."""
    return [
        ThreadState(
            t.name,
            _STATE_NAMES.get(t.state, "?"),
            "" if t.state == DONE else t.op,
            "" if t.state == DONE else describe(t.res),
            tuple(describe(lock) for lock in t.task.held),
        )
        for t in ex.threads
    ]


class _Stepping(Replay):
    """A replay that reports every step before it runs (``replay --step``)."""

    def __init__(self, steps: tuple[int, ...], on_step: Callable[[int, ThreadState, list[ThreadState]], None]) -> None:
        super().__init__(steps)
        self.on_step = on_step

    def choose(
        self, cands: list[ModelThread], current: ModelThread | None, ex: Execution
    ) -> ModelThread | None:
        chosen = super().choose(cands, current, ex)
        if chosen is not None:
            states = thread_states(ex)
            self.on_step(len(ex.trace), states[chosen.idx], states)
        return chosen


def replay(
    scenario: Scenario,
    schedule: str | Schedule,
    max_steps: int | None = None,
    *,
    on_step: Callable[[int, ThreadState, list[ThreadState]], None] | None = None,
) -> Replayed:
    """Re-run ``scenario`` following ``schedule`` exactly.

    Raises :class:`ScheduleFormatError` for a malformed string,
    :class:`StaleScheduleError` when the scenario or the primitive sequence
    changed since it was recorded, and :class:`DivergenceError` when a step's
    thread cannot run; :class:`UsageError` for a name instead of a
    :class:`Scenario` (``mmu_notifier.scenarios.replay`` looks names up).
    ``on_step(index, thread, threads)`` is called before every step with the
    thread about to run and every thread's state (``replay --step``).
    """
    sc = _require_scenario(scenario, "replay")
    sched = schedule if isinstance(schedule, Schedule) else Schedule.parse(schedule)
    if sched.scenario != sc.name:
        raise StaleScheduleError(
            f"the schedule was recorded for scenario {sched.scenario!r}, not {sc.name!r}"
        )
    strat = Replay(sched.steps) if on_step is None else _Stepping(sched.steps, on_step)
    limit = max(max_steps or sc.max_steps, len(sched.steps))
    outcome = Execution(sc, strat, limit).run()
    strat.finish(outcome)
    sfp = scenario_fingerprint(sc.name, sc.version, outcome.declared)
    if sfp != sched.scenario_fp:
        raise StaleScheduleError(
            f"scenario {sc.name} changed since the schedule was recorded "
            f"(fingerprint {sfp}, schedule has {sched.scenario_fp}): version or threads differ"
        )
    if strat.divergence:
        raise DivergenceError(f"replay of {sc.name} diverged: {strat.divergence}")
    tfp = trace_fingerprint(outcome.trace)
    if tfp != sched.trace_fp:
        raise StaleScheduleError(
            f"replay of {sc.name} followed every step but the (thread, op, resource) sequence differs "
            f"from the recorded one (fingerprint {tfp}, schedule has {sched.trace_fp}): the model changed"
        )
    return Replayed(sc.name, str(sched), outcome)
