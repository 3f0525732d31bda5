"""``mmu-notifier run``: the main job.

Everything is checked before the first step: the workload file, ``--config``
and the environment (settings for a driver that is not installed are refused),
``--driver``/``--skip-driver``, ``--threads`` (and its conflict with
``--timeline``), the output file's directory, the watchdog deadline. Exit
codes: 0 clean, 1 violations, a broken plugin left out or a hang, 2 bad input,
130 Ctrl-C (after the partial summary).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from mmu_notifier import log, plugins
from mmu_notifier.cli_common import (
    add_driver_selection,
    check_timeline_option,
    driver_settings,
    select_drivers,
    styled,
)
from mmu_notifier.errors import UsageError
from mmu_notifier.workload import model, runner, summary
from mmu_notifier.workload.default import DEFAULT

#: the most OS threads ``--threads`` may ask for
MAX_THREADS = 256


class Progress:
    """A one-line progress bar with an ETA on a terminal's stderr, shown only once a run has taken over a second.

    It shows the steps done of the workload's total and the time left at the rate so far; a run that goes
    past its estimated total (background operations are counted as they happen) raises the total, so the
    bar never overflows. :meth:`close` leaves the last state on screen with the time the run took. Off
    (``enabled=False``) it writes nothing: the CLI turns it off when stderr is not a terminal or with
    ``--json``, so a pipe or a log never holds carriage returns.
    """

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.total = max(1, total)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = clock()
        self.last = 0.0
        self.done = 0
        self.shown = False

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        self.done = done
        now = self.clock()
        if now - self.started < 1.0 or now - self.last < 0.2:
            return
        self.last = now
        self._draw(now, final=False)

    def line(self, now: float, final: bool = False) -> str:
        """The bar as it reads at ``now``: ``[####....] 120/400 steps  ETA 7s`` (at the end: ``in 9s``)."""
        done = self.done
        self.total = max(self.total, done)
        elapsed = now - self.started
        if final:
            when = f"in {_duration(elapsed)}"
        elif done:
            when = f"ETA {_duration(elapsed / done * (self.total - done))}"
        else:
            when = "ETA ?"
        count = f"{done}/{self.total} steps"
        room = shutil.get_terminal_size().columns - len(count) - len(when) - 6
        bar = max(10, min(30, room))
        filled = bar * done // self.total
        return f"[{'#' * filled}{'.' * (bar - filled)}] {count}  {when}"

    def _draw(self, now: float, final: bool) -> None:
        self.shown = True
        self.stream.write(f"\r{self.line(now, final)}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (its last state stays on screen, with how long the run took)."""
        if self.shown:
            self._draw(self.clock(), final=True)
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    """``7s``, ``2m05s`` or ``1h02m``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def progress_enabled(stream: TextIO, as_json: bool) -> bool:
    """Progress is drawn only for a person: ``stream`` is a terminal and the output is not ``--json``."""
    return stream.isatty() and not as_json


def _workload(args: argparse.Namespace) -> model.Workload:
    try:
        workload = model.load(args.file) if args.file else DEFAULT
    except model.WorkloadError as error:
        raise UsageError(str(error)) from error
    installed = [ep.name for ep in plugins.available_drivers()]
    origin = f"workload {args.file}" if args.file else "workload"
    for name in workload.driver_configs:
        if name not in installed:
            raise UsageError(f"{origin}: driver_configs.{name}: no installed driver is named {name!r} "
                             f"(installed: {', '.join(installed) or 'none'})")
    for index, name in enumerate(workload.drivers or ()):
        if name not in installed:
            raise UsageError(f"{origin}: drivers.{index}: no installed driver is named {name!r} "
                             f"(installed: {', '.join(installed) or 'none'})")
    configs = driver_settings(args.config, installed)
    if configs:
        merged = {**configs, **workload.driver_configs}
        workload = workload.model_copy(update={"driver_configs": merged})
    chosen = select_drivers(workload.drivers or installed, args.driver, args.skip_driver)
    if chosen is not None:
        workload = workload.model_copy(update={"drivers": chosen})
    return workload


def _check_flags(args: argparse.Namespace) -> None:
    check_timeline_option(args.timeline)
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        raise UsageError(f"--threads {args.threads}: must be between 1 and {MAX_THREADS}")
    if args.threads is not None and args.timeline is not None:
        raise UsageError("--timeline needs the deterministic scheduler (drop --threads)")
    if args.watchdog is not None and not 0 < args.watchdog <= 86_400:
        raise UsageError(f"--watchdog {args.watchdog:g}: must be more than 0 and at most 86400 seconds")
    if args.seed is not None and not -(2**63) <= args.seed < 2**63:
        raise UsageError(f"--seed {args.seed}: must fit in 64 bits")


def _print(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, indent=2))
    else:  # fitted to the terminal (COLUMNS, else 80 when piped); colour and folded lines only for a person
        width = shutil.get_terminal_size().columns
        print(summary.render(doc, width, colour=styled(sys.stdout), wrap=sys.stdout.isatty()))
    sys.stdout.flush()


def _cmd_run(args: argparse.Namespace) -> int:
    _check_flags(args)
    workload = _workload(args)
    try:
        runner.validate_drivers(workload)
    except model.WorkloadError as error:
        raise UsageError(str(error)) from error
    if args.log_format:
        log.configure(args.log_format)
    seed = workload.seed if args.seed is None else args.seed
    progress = Progress(workload.total_steps(), enabled=progress_enabled(sys.stderr, args.json))
    try:
        result = runner.run(
            workload, seed, args.threads, on_step=progress, watchdog=args.watchdog, record=args.timeline is not None
        )
    except runner.RunInterrupted as stop:
        progress.close()
        _print(summary.document(stop.result), args.json)
        print("mmu-notifier run: interrupted", file=sys.stderr)
        return 130
    finally:
        progress.close()
        if args.log_format:
            log.configure(None)
    for name, reason in (result.left_out or {}).items():
        print(f"mmu-notifier run: driver {name!r} left out (broken plugin): {reason}", file=sys.stderr)
    doc: dict[str, Any] = summary.document(result)
    if args.timeline is not None and result.stopped is None:
        timeline = result.timeline
        if timeline is not None:
            timeline.write(args.timeline, f"{workload.name} seed {seed}")
            doc["timeline"] = str(args.timeline)
    _print(doc, args.json)
    if result.stopped == "hang":
        print(f"mmu-notifier run: stopped by the watchdog after {args.watchdog:g} s (see the violations)",
              file=sys.stderr)
    if not result.ok and not args.json and result.stopped is None:
        print(_next_step(result, seed, args))
    return 0 if result.ok else 1


def _next_step(result: runner.RunResult, seed: int, args: argparse.Namespace) -> str:
    """What to run next after violations: the kit on each driver at fault, and this run drawn."""
    blamed = sorted(name for name, stats in result.drivers.items() if stats.violations)
    lines = [f"next: mmu-notifier conformance {name}   (the kit's checks and races of {name})" for name in blamed]
    if args.threads is None:
        source = f"{args.file} " if args.file else ""
        lines.append(f"next: mmu-notifier run {source}--seed {seed} --timeline run.html   (the same run, drawn)")
    return "\n".join(lines)


def add_commands(sub: Any) -> None:
    """Add ``run`` to the ``mmu-notifier`` sub-commands."""
    run = sub.add_parser(
        "run",
        help="run a workload over every installed driver and check every rule",
        description="Run a workload (processes, their steps, background reclaim) over the installed drivers under "
        "the deterministic scheduler; coherence is checked at every quiescent point; exit 1 on any violation.",
        epilog="examples:\n  mmu-notifier run\n  mmu-notifier run examples/workloads/churn.toml --seed 3\n"
        "  mmu-notifier run --timeline run.html\n  mmu-notifier run --json | head",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("file", nargs="?", type=Path, help="a workload file (.toml, .yaml); default: built-in")
    run.add_argument("--seed", type=int, help="scheduler seed (default: the workload's); same seed, same run")
    run.add_argument("--threads", type=int, metavar="N", help="run on N real OS threads instead")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    run.add_argument("--log-format", choices=("json", "console"), help="stream structlog events to stderr")
    run.add_argument("--timeline", type=Path, metavar="FILE", help="draw the run as swimlanes (.svg or .html)")
    run.add_argument("--config", type=Path, help="TOML file with [drivers.NAME] tables")
    run.add_argument("--watchdog", type=float, default=runner.WATCHDOG_SECONDS, metavar="SECONDS",
                     help=f"a driver call running longer is reported as a hang and stops the run "
                          f"(default {runner.WATCHDOG_SECONDS:g})")
    add_driver_selection(run)
    run.set_defaults(func=_cmd_run)
