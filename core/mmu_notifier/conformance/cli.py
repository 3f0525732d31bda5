"""``mmu-notifier conformance [NAME...]``: run the conformance kit (pytest) against installed drivers.

The exit code is pytest's: 0 when every check passed, 1 when one failed
(a broken driver fails, it is never skipped), 2 to 5 for pytest's own
troubles; bad flag values (``--examples -1``, ``--budget 0``, an unknown
driver, a missing ``--config``) are refused before pytest starts, exit 2; 130
after Ctrl-C. It never loads a ``conftest.py`` (of the current directory or
anywhere) unless ``--conftest`` asks for it. A check that does not finish
within ``--watchdog`` seconds is reported as a hang, naming the test (so the
driver) and the driver callback it is stuck in, and the command exits 1.
Wired into the main CLI by :func:`add_commands`; also runnable as
``python -m mmu_notifier.conformance`` (which calls the main CLI: this module
never imports it).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Any

from mmu_notifier.cli_common import check_input_file, check_output_path, driver_settings
from mmu_notifier.errors import UsageError

PLUGIN = "mmu_notifier.conformance.plugin"


def plugin_autoloaded() -> bool:
    """True when pytest will load the kit's plugin by itself (the pytest11 entry point, autoload on)."""
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.value == PLUGIN for ep in importlib.metadata.entry_points(group="pytest11"))


def pytest_args(args: argparse.Namespace) -> list[str]:
    """The pytest command line for the parsed ``conformance`` arguments."""
    argv = ["--pyargs", "mmu_notifier.conformance", "-p", "no:cacheprovider", "-o", "addopts=",
            # this process imported mmu_notifier before pytest started: nothing of the kit is affected
            "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    if not plugin_autoloaded():
        argv += ["-p", PLUGIN]
    for name in args.drivers:
        argv += ["--mmu-driver", name]
    for option in ("examples", "steps", "budget", "seed"):
        value = getattr(args, option)
        if value is not None:
            argv += [f"--mmu-{option}", str(value)]
    if args.config:
        argv += ["--mmu-config", str(args.config)]
    if not args.conftest:
        argv.append("--noconftest")
    if args.watchdog is not None:
        argv += ["--mmu-watchdog", str(args.watchdog)]
    if args.k:
        argv += ["-k", args.k]
    if args.exitfirst:
        argv.append("-x")
    argv += ["-v"] * args.verbose + ["-q"] * args.quiet
    if args.junitxml:
        argv.append(f"--junitxml={args.junitxml}")
    return argv


#: the watchdog's default deadline per check, in seconds (generous: the slowest check takes a few seconds)
WATCHDOG_SECONDS = 300.0


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad flag values before pytest starts (exit 2), rather than as failing driver tests."""
    for option, least in (("examples", 1), ("steps", 1), ("budget", 1), ("seed", 0)):
        value = getattr(args, option)
        if value is not None and value < least:
            raise UsageError(f"conformance: --{option} must be at least {least}, got {value}")
        if value is not None and value >= 2**63:
            raise UsageError(f"conformance: --{option} {value}: too large")
    if args.watchdog is not None and not 0 < args.watchdog <= 86_400:
        raise UsageError(f"conformance: --watchdog {args.watchdog:g}: must be more than 0 and at most 86400 seconds")
    check_input_file("--config", Path(args.config) if args.config else None)
    check_output_path("--junitxml", Path(args.junitxml) if args.junitxml else None)
    installed = sorted(ep.name for ep in importlib.metadata.entry_points(group="mmu_notifier.drivers"))
    for name in args.drivers:
        if name not in installed:
            raise UsageError(f"conformance: no installed driver is named {name!r} "
                             f"(installed: {', '.join(installed) or 'none'})")
    if args.config:
        driver_settings(Path(args.config), installed)  # unreadable file, bad TOML or unknown driver tables


def run(args: argparse.Namespace) -> int:
    """Run pytest on the kit; returns pytest's exit code (130 after Ctrl-C)."""
    check_args(args)
    try:
        import pytest
    except ImportError:
        print("mmu-notifier: the conformance kit needs pytest and hypothesis: pip install 'mmu-notifier[test]'",
              file=sys.stderr)
        return 2
    code = int(pytest.main(pytest_args(args)))
    return 130 if code == int(pytest.ExitCode.INTERRUPTED) else code


def add_commands(subparsers: Any) -> None:
    """Add ``conformance`` to the ``mmu-notifier`` sub-commands."""
    parser = subparsers.add_parser(
        "conformance",
        help="run the conformance kit against installed driver plugins (exit code = pytest's)",
        description="Run the conformance kit (pytest --pyargs mmu_notifier.conformance) against every installed "
        "driver plugin, or the ones named.",
    )
    parser.add_argument("drivers", nargs="*", metavar="NAME", help="drivers to check (default: every installed one)")
    parser.add_argument("-k", metavar="EXPR", help="only checks matching the pytest -k expression")
    parser.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first failure")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output (repeatable)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less output (repeatable)")
    parser.add_argument("--examples", type=int, help="examples of the state-machine check")
    parser.add_argument("--steps", type=int, help="steps per state-machine example")
    parser.add_argument("--budget", type=int, help="PCT schedules per concurrency check")
    parser.add_argument("--seed", type=int, help="seed of the PCT explorations")
    parser.add_argument("--config", help="TOML file with [drivers.NAME] tables")
    parser.add_argument("--junitxml", metavar="PATH", help="write a JUnit XML report")
    parser.add_argument("--conftest", action="store_true",
                        help="load conftest.py files (by default none is, not even one in the current directory)")
    parser.add_argument("--watchdog", type=float, default=WATCHDOG_SECONDS, metavar="SECONDS",
                        help=f"a check running longer is reported as a hang (default {WATCHDOG_SECONDS:g})")
    parser.set_defaults(func=run)

