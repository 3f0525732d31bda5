"""The explorer's sub-commands: ``explore SCENARIO``, ``explore --list``, ``explore --all``, ``replay``.

``mmu-notifier`` wires them in with :func:`add_commands`. Exit codes:
``explore`` 1 when anything was found (the report prints the schedule and the
replay command), 0 when nothing was (with the schedule count); ``explore
--all`` 1 when some scenario's outcome is not the one it declares, 0 otherwise
(a clean scenario whose search ran out of budget is reported as not complete,
with its count, and is no mismatch); ``replay`` 1 when the replayed run fails,
0 when it is clean; 2 for bad arguments and for a schedule that cannot be
replayed (malformed, stale or diverging), with a one-line message. Driver
plugins that cannot be loaded (or whose ``explore_scenarios`` hook fails) are
left out with a line on stderr each, the command goes on with the rest and
exits 1 at the end so CI notices; ``--driver``/``--skip-driver`` choose which
plugins' scenarios are loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from mmu_notifier import plugins
from mmu_notifier.cli_common import (
    add_driver_selection,
    check_output_path,
    check_timeline_option,
    report_left_out,
    select_drivers,
    table,
)
from mmu_notifier.errors import UsageError
from mmu_notifier.explore import STRATEGIES, ReplayError, Scenario, Schedule, Stats, ThreadState, explore, replay
from mmu_notifier.scenarios import UnknownScenarioError, get, plugin_scenarios_report, resolve, scenarios

#: the environment variable naming a Dask scheduler when ``--scheduler`` is not given
SCHEDULER_ENV = "MMU_NOTIFIER_SCHEDULER"

_EXPLORE_EXAMPLES = """examples:
  mmu-notifier explore --list
  mmu-notifier explore unregister-no-release
  mmu-notifier explore amdkfd-legacy-open --budget 5000 --timeline race.html
  mmu-notifier explore path/to/my_scenarios.py:my-race --json
  mmu-notifier explore get-put --strategy dfs --preemptions 3
  mmu-notifier explore get-put --strategy dfs --preemptions 4 --jobs 2
  mmu-notifier explore get-put --budget 20000 --jobs 8 --scheduler tcp://scheduler:8786
  mmu-notifier explore --all --jobs 2
"""

_REPLAY_EXAMPLES = """examples:
  mmu-notifier replay mx2:builtin:unregister-no-release:...      (the line explore printed)
  mmu-notifier replay unregister-no-release mx1:unregister-no-release:...   (an older string)
  mmu-notifier replay --step mx2:builtin:abba-deadlock:...
  mmu-notifier replay path/to/my_scenarios.py:my-race mx2:file=...
"""


def add_commands(subparsers: Any) -> None:
    """Add ``explore`` and ``replay`` to an argparse sub-parser set (dispatch: ``args.func(args)``)."""
    ex = subparsers.add_parser(
        "explore",
        help="explore a concurrency scenario's interleavings for bugs",
        description=(
            "Run a scenario under a scheduling strategy; exit 1 when a problem is found. The default "
            "strategy is a portfolio: bounded exhaustive search to --preemptions, then PCT at rising "
            "depth, then random, within --budget; the verdict says what was covered."
        ),
        epilog=_EXPLORE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ex.add_argument("scenario", nargs="?", help="scenario name (see --list), or FILE.py:NAME")
    ex.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ex.add_argument(
        "--all",
        action="store_true",
        help="run every scenario against its declared outcome (dpor for the clean ones; for the others "
        "--strategy, by default dpor, then pct, then random until the declared finding shows)",
    )
    ex.add_argument("--strategy", help=f"one of {', '.join(STRATEGIES)} (default portfolio)")
    ex.add_argument("--budget", type=int, default=1000, help="most schedules to run (default 1000)")
    ex.add_argument("--seed", type=int, default=0, help="seed of random and pct (default 0)")
    ex.add_argument("--depth", type=int, default=2, help="PCT bug depth d (default 2)")
    ex.add_argument(
        "--preemptions",
        type=int,
        default=None,
        help="preemption bound k: dfs (default 2); dpor (default unbounded; a bounded dpor proves nothing)",
    )
    ex.add_argument("--time-budget", type=float, help="stop starting schedules after this many seconds")
    ex.add_argument("--keep-going", action="store_true", help="do not stop at the first bug")
    ex.add_argument("--json", action="store_true", help="print the report as JSON to stdout")
    ex.add_argument("--output", type=Path, metavar="FILE", help="also write the report to FILE (JSON with --json)")
    ex.add_argument("--progress", action="store_true", help="print progress to stderr (default: if a tty)")
    ex.add_argument("--timeline", type=Path, metavar="FILE", help="draw the first finding as swimlanes (.svg/.html)")
    ex.add_argument(
        "--jobs",
        metavar="N",
        help="split the search over N processes (this one included): dfs/exhaustive by schedule prefix, random/pct "
        "by seed streams; with --all, the scenarios side by side; the report is the same for every N",
    )
    ex.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help=f"run the shards (with --all, the scenarios) on the Dask cluster at ADDRESS (tcp://HOST:PORT; default "
        f"${SCHEDULER_ENV}); needs mmu-notifier[distributed] and, on every worker, the same plugins",
    )
    add_driver_selection(ex)
    ex.set_defaults(func=cmd_explore)
    rp = subparsers.add_parser(
        "replay",
        help="replay a schedule printed by explore",
        description=(
            "Re-run the scenario a schedule names, following it step for step; exit 1 when the run fails. "
            "An mx2 schedule names its scenario and where it comes from; give the scenario name first "
            "for an older (mx1) string or to override."
        ),
        epilog=_REPLAY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rp.add_argument("args", nargs="+", metavar="[SCENARIO] SCHEDULE", help="schedule string (mx2:...)")
    rp.add_argument("--step", action="store_true",
                    help="walk the run one step at a time, printing each thread's state (Enter steps on a tty)")
    rp.add_argument("--json", action="store_true", help="print the replay as JSON to stdout")
    rp.add_argument("--output", type=Path, metavar="FILE", help="also write the replay to FILE (JSON with --json)")
    rp.add_argument("--timeline", type=Path, metavar="FILE", help="draw the run as swimlanes (.svg/.html)")
    add_driver_selection(rp)
    rp.set_defaults(func=cmd_replay)


def _check_args(args: argparse.Namespace) -> None:
    check_timeline_option(args.timeline)
    check_output_path("--output", args.output)
    if args.strategy is not None and args.strategy not in STRATEGIES:
        raise UsageError(
            f"explore: unknown strategy {args.strategy!r} (choose from {', '.join(STRATEGIES)})"
        )
    if args.budget < 1:
        raise UsageError(f"explore: --budget must be at least 1, got {args.budget}")
    if args.depth < 1:
        raise UsageError(f"explore: --depth must be at least 1, got {args.depth}")
    if args.preemptions is not None and args.preemptions < 0:
        raise UsageError(f"explore: --preemptions must be at least 0, got {args.preemptions}")
    if args.time_budget is not None and args.time_budget <= 0:
        raise UsageError(f"explore: --time-budget must be positive, got {args.time_budget}")
    args.jobs = _jobs(getattr(args, "jobs", None))
    scheduler = getattr(args, "scheduler", None) or os.environ.get(SCHEDULER_ENV) or None
    args.scheduler = scheduler.strip() if scheduler else None


def _jobs(text: str | None) -> int | None:
    """``--jobs N``: a whole number of at least 1 (None: not given, the search runs as one job)."""
    if text is None:
        return None
    try:
        jobs = int(text)
    except ValueError:
        raise UsageError(f"explore: --jobs must be a whole number of processes, got {text!r}") from None
    if jobs < 1:
        raise UsageError(f"explore: --jobs must be at least 1, got {jobs}")
    return jobs


def _plugin_scenarios(args: argparse.Namespace, command: str) -> tuple[dict[str, Scenario], bool]:
    """The healthy plugins' scenarios by name, and whether a broken plugin was left out (said on stderr)."""
    only = select_drivers([ep.name for ep in plugins.available_drivers()], args.driver, args.skip_driver)
    found, failed = plugin_scenarios_report(only=only)
    report_left_out(failed, command)
    return {s.name: s for s in found}, bool(failed)


def _scenario(name: str, command: str, args: argparse.Namespace) -> tuple[Scenario, bool]:
    """The scenario called ``name`` (built-ins first, plugins only if needed), and whether a plugin was left out."""
    try:
        return get(name), False
    except UnknownScenarioError:
        pass
    extra, broken = _plugin_scenarios(args, command)
    if name not in extra:
        known = sorted([*scenarios(), *extra])
        raise UsageError(f"{command}: unknown scenario {name!r}; known: {', '.join(known)}")
    return extra[name], broken


def _emit(args: argparse.Namespace, text: str, doc: dict[str, Any]) -> None:
    """Print the report (JSON with ``--json``) to stdout and write it to ``--output`` if given."""
    out = json.dumps(doc, indent=2) if args.json else text
    print(out)
    if args.output is not None:
        args.output.write_text(out + "\n")


class _Progress:
    """Prints the running statistics to a stream: one rewritten line on a tty, else a line each time."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, stats: Stats) -> None:
        line = (
            f"{stats.schedules} schedules, {stats.failing} failing, {stats.elapsed:.1f} s, "
            f"{stats.schedules_per_s:,.0f}/s"
        )
        self.stream.write(f"\r{line}" if self.tty else f"{line}\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")


def cmd_list(args: argparse.Namespace | None = None) -> int:
    """Print every scenario (name, source, expected outcome, what it shows); 1 when a broken plugin is left out."""
    if args is None:
        args = argparse.Namespace(driver=None, skip_driver=None)
    extra, broken = _plugin_scenarios(args, "explore")
    rows = [(name, s.source or "-", s.expect or "clean", s.description)
            for name, s in sorted({**scenarios(), **extra}.items())]
    print(table(("scenario", "source", "expected", "what it shows"), rows))
    return 1 if broken else 0


def cmd_all(args: argparse.Namespace) -> int:
    """``explore --all``: every scenario against its declared outcome; exit 1 on a mismatch.

    How each scenario is checked: :func:`mmu_notifier.scenarios._all.check`. With
    ``--jobs N`` (or ``--scheduler``) the scenarios are checked side by side; the
    report is the same, line for line.
    """
    from mmu_notifier.scenarios._all import AllOptions, check_all, report

    _check_args(args)
    options = AllOptions(args.strategy, args.budget, args.seed, args.time_budget, args.depth, args.preemptions)
    chosen = [scenario for _, scenario in sorted(scenarios(plugins=True).items())]
    rows = check_all(chosen, options, jobs=args.jobs or 1, scheduler=args.scheduler)
    return 1 if report(rows, lambda line: print(line, flush=True)) else 0


def cmd_explore(args: argparse.Namespace) -> int:
    """``explore``: run the exploration, print the report, exit 1 if anything was found."""
    if args.list:
        return cmd_list(args)
    if args.all:
        if args.scenario:
            raise UsageError("explore: --all runs every scenario; do not name one")
        return cmd_all(args)
    if not args.scenario:
        raise UsageError("explore: name a scenario, or use --list or --all")
    _check_args(args)
    scenario, broken = _scenario(args.scenario, "explore", args)
    common: dict[str, Any] = {
        "depth": args.depth, "preemptions": args.preemptions, "stop_on_first": not args.keep_going,
    }
    positional = (args.strategy or "portfolio", args.budget, args.seed, args.time_budget)
    progress = _Progress(sys.stderr) if args.progress or sys.stderr.isatty() else None
    if args.jobs is not None or args.scheduler:
        from mmu_notifier.scenarios._parallel import explore_parallel

        result = explore_parallel(scenario, *positional, **common, jobs=args.jobs or 1, scheduler=args.scheduler,
                                  progress=progress)
    else:
        result = explore(scenario, *positional, **common, progress=progress)
    if progress is not None:
        progress.done()
    text = result.text()
    if result.failed:
        text += f"\nnext: {result.findings[0].replay} --step   (walk it step by step; --timeline FILE.html draws it)"
    _emit(args, text, result.to_json())
    if args.timeline is not None and result.findings:
        finding = result.findings[0]
        finding.timeline.write(args.timeline, f"{scenario.name}: {finding.problem.kind}")
    if broken:
        print("explore: some driver plugins were left out (see above)", file=sys.stderr)
    return 1 if result.failed or broken else 0


def cmd_replay(args: argparse.Namespace) -> int:
    """``replay [SCENARIO] SCHEDULE``: follow the schedule, print the timeline, exit 1 if the run fails."""
    check_timeline_option(args.timeline)
    check_output_path("--output", args.output)
    if len(args.args) > 2:
        raise UsageError(f"replay: expected [SCENARIO] SCHEDULE, got {len(args.args)} arguments")
    name, schedule = (None, args.args[0]) if len(args.args) == 1 else args.args
    try:
        sched = Schedule.parse(schedule)  # malformed or absurdly long: refused before any scenario is loaded
    except ReplayError as error:
        raise UsageError(f"replay: schedule {schedule[:40]!r}: {error}") from None
    broken = False
    try:
        if name is not None:
            scenario, broken = _scenario(name, "replay", args)
        else:
            scenario = resolve(sched)
    except (ReplayError, UnknownScenarioError) as error:
        raise UsageError(f"replay: {error}") from None
    except UsageError as error:
        raise UsageError(f"replay: {error}") from None
    step = _Stepper(sys.stdout, interactive=sys.stdin.isatty() and sys.stdout.isatty()) if args.step else None
    try:
        replayed = replay(scenario, sched, on_step=step)
    except ReplayError as error:
        raise UsageError(f"replay: {error}") from None
    _emit(args, replayed.text(), {"scenario": scenario.name, "schedule": str(sched),
                                  "problem": replayed.problem.kind.value if replayed.problem else None,
                                  "timeline": replayed.timeline.to_json()})
    if args.timeline is not None:
        replayed.timeline.write(args.timeline, f"{scenario.name} replay")
    return 1 if replayed.problem is not None or broken else 0


class _Stepper:
    """``replay --step``: before each step, every thread's state and the step about to run."""

    def __init__(self, stream: TextIO, interactive: bool) -> None:
        self.stream = stream
        self.interactive = interactive

    def __call__(self, index: int, chosen: ThreadState, threads: list[ThreadState]) -> None:
        lines = [f"step {index}: {chosen.name} {chosen.op} {chosen.resource}".rstrip()]
        for t in threads:
            mark = ">" if t.name == chosen.name else " "
            held = f"  holds {', '.join(t.held)}" if t.held else ""
            lines.append(f"  {mark} {t.name:<16} {t.state:<8} {t.op} {t.resource}{held}".rstrip())
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        if self.interactive:
            input("-- Enter for the next step --")
