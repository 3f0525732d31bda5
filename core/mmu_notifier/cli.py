"""The ``mmu-notifier`` command line.

Every sub-command lives in the module of its job and registers itself through
an ``add_commands(subparsers)`` function, listed in :data:`COMMANDS`; this
module only parses, dispatches and turns a
:class:`~mmu_notifier.errors.UsageError` (or a config error) into a one-line
message with exit code 2. Imports go one way: this module imports the
sub-command modules, which import neither it nor each other (their shared
checks are in :mod:`mmu_notifier.cli_common`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmu_notifier import __version__
from mmu_notifier.errors import ConfigError, UsageError


# The sub-command modules are imported when the parser is built, not when this
# module is, so ``--version`` starts in a few tens of milliseconds.
def _run_commands(sub: Any) -> None:
    from mmu_notifier.workload import cli as run_cli

    run_cli.add_commands(sub)


def _explore_commands(sub: Any) -> None:
    from mmu_notifier.scenarios import cli as explore_cli

    explore_cli.add_commands(sub)


def _conformance_commands(sub: Any) -> None:
    from mmu_notifier.conformance import cli as conformance_cli

    conformance_cli.add_commands(sub)


#: the sub-command modules' ``add_commands``, in the order ``--help`` lists them (after ``drivers``)
COMMANDS: tuple[Callable[[Any], None], ...] = (_run_commands, _explore_commands, _conformance_commands)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own errors: one line, exit 2
        raise UsageError(message)


def _cmd_drivers(args: argparse.Namespace) -> int:
    from mmu_notifier import config as config_mod
    from mmu_notifier import plugins
    from mmu_notifier.kernel import Kernel

    entry_points = {ep.name: ep for ep in plugins.available_drivers()}
    if args.schema:
        if args.schema not in entry_points:
            raise UsageError(f"no installed driver is named {args.schema!r} (installed: {sorted(entry_points)})")
        model = getattr(entry_points[args.schema].load(), "config_model", config_mod.DriverConfig)
        print(json.dumps(model.model_json_schema(), indent=2))
        return 0
    report = Kernel().drivers.load_entry_points(config_mod.driver_configs(args.config))
    rows: list[dict[str, Any]] = []
    for name, ep in entry_points.items():
        ops = report.loaded.get(name)
        dist = ep.dist.name if ep.dist else "?"
        if ops is not None:
            caps = sorted(getattr(ops.driver, "capabilities", ()))
            rows.append({"name": name, "version": ops.version, "distribution": dist, "capabilities": caps,
                         "config": "valid"})
        else:
            rows.append({"name": name, "version": ep.dist.version if ep.dist else "?", "distribution": dist,
                         "capabilities": [], "config": f"invalid: {report.failed[name]}"})
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no driver plugins are installed (entry-point group mmu_notifier.drivers)")
    else:
        for row in rows:
            shown = ", ".join(row["capabilities"]) or "-"
            print(f"{row['name']:<10} {row['version']:<8} {row['distribution']:<24} {row['config']}  [{shown}]")
    return 1 if report.failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every sub-command."""
    parser = _Parser(prog="mmu-notifier", description="A model of the Linux 5.4 mmu_notifier subsystem.")
    parser.add_argument("--version", action="version", version=f"mmu-notifier {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    drivers = sub.add_parser("drivers", help="list installed driver plugins and whether their config is valid")
    drivers.add_argument("--schema", metavar="NAME", help="print the JSON schema of NAME's config")
    drivers.add_argument("--config", type=Path, help="TOML file with [drivers.NAME] tables")
    drivers.add_argument("--json", action="store_true", help="print JSON")
    drivers.set_defaults(func=_cmd_drivers)
    for add_commands in COMMANDS:
        add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmu-notifier`` script."""
    if (sys.argv[1:] if argv is None else list(argv)) == ["--version"]:  # answered before any import
        print(f"mmu-notifier {__version__}")
        return 0
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except (UsageError, ConfigError) as error:
        print(f"mmu-notifier: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
