"""``mmu-notifier run``: the main job."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from mmu_notifier import log
from mmu_notifier.cli_common import check_timeline_option
from mmu_notifier.config import driver_configs
from mmu_notifier.errors import UsageError
from mmu_notifier.workload import model, runner, summary
from mmu_notifier.workload.default import DEFAULT


class Progress:
    """A one-line progress bar on stderr, shown only once a run has taken over a second."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(1, total)
        self.enabled = enabled
        self.started = time.perf_counter()
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.started < 1.0 or now - self.last < 0.2:
            return
        self.last = now
        self.shown = True
        filled = min(30, 30 * done // self.total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} steps")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def _workload(args: argparse.Namespace) -> model.Workload:
    try:
        workload = model.load(args.file) if args.file else DEFAULT
    except model.WorkloadError as error:
        raise UsageError(str(error)) from error
    configs = driver_configs(args.config)
    if configs:
        merged = {**configs, **workload.driver_configs}
        workload = workload.model_copy(update={"driver_configs": merged})
    return workload


def _cmd_run(args: argparse.Namespace) -> int:
    workload = _workload(args)
    check_timeline_option(args.timeline)
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    try:
        runner.validate_drivers(workload)
    except model.WorkloadError as error:
        raise UsageError(str(error)) from error
    if args.log_format:
        log.configure(args.log_format)
    seed = workload.seed if args.seed is None else args.seed
    progress = Progress(workload.total_steps(), enabled=sys.stderr.isatty() and not args.json)
    try:
        if args.threads is None:
            result = runner.run_deterministic(workload, seed, on_step=progress, record=args.timeline is not None)
        else:
            result = runner.run_threads(workload, args.threads, on_step=progress)
    finally:
        progress.close()
        if args.log_format:
            log.configure(None)
    doc: dict[str, Any] = summary.document(result)
    if args.timeline is not None:
        timeline = result.timeline
        if timeline is None:
            raise UsageError("--timeline needs the deterministic scheduler (drop --threads)")
        timeline.write(args.timeline, f"{workload.name} seed {seed}")
        doc["timeline"] = str(args.timeline)
    print(json.dumps(doc, indent=2) if args.json else summary.render(doc))
    return 0 if result.ok else 1


def add_commands(sub: Any) -> None:
    """Add ``run`` to the ``mmu-notifier`` sub-commands."""
    run = sub.add_parser("run", help="run a workload over every installed driver and check every rule")
    run.add_argument("file", nargs="?", type=Path, help="a workload file (.toml, .yaml); default: built-in")
    run.add_argument("--seed", type=int, help="scheduler seed (default: the workload's); same seed, same run")
    run.add_argument("--threads", type=int, metavar="N", help="run on N real OS threads instead")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    run.add_argument("--log-format", choices=("json", "console"), help="stream structlog events to stderr")
    run.add_argument("--timeline", type=Path, metavar="FILE", help="draw the run as swimlanes (.svg or .html)")
    run.add_argument("--config", type=Path, help="TOML file with [drivers.NAME] tables")
    run.set_defaults(func=_cmd_run)
