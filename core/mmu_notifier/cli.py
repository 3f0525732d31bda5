"""The ``mmu-notifier`` command line.

Every sub-command lives in the module of its job and registers itself through
an ``add_commands(subparsers)`` function; this module only parses, dispatches
and turns a :class:`UsageError` (or a config error) into a one-line message
with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmu_notifier import config as config_mod
from mmu_notifier import plugins
from mmu_notifier.errors import ConfigError
from mmu_notifier.kernel import Kernel


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own errors: one line, exit 2
        raise UsageError(message)


def driver_configs(config_file: Path | None) -> dict[str, dict[str, Any]]:
    """Driver settings from ``--config FILE`` and the environment (environment wins)."""
    file_settings = config_mod.read_toml(config_file) if config_file else {}
    return config_mod.merge_sources(file_settings, config_mod.read_environ())


def _cmd_drivers(args: argparse.Namespace) -> int:
    entry_points = {ep.name: ep for ep in plugins.available_drivers()}
    if args.schema:
        if args.schema not in entry_points:
            raise UsageError(f"no installed driver is named {args.schema!r} (installed: {sorted(entry_points)})")
        model = getattr(entry_points[args.schema].load(), "config_model", config_mod.DriverConfig)
        print(json.dumps(model.model_json_schema(), indent=2))
        return 0
    report = Kernel().drivers.load_entry_points(driver_configs(args.config))
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
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    drivers = sub.add_parser("drivers", help="list installed driver plugins and whether their config is valid")
    drivers.add_argument("--schema", metavar="NAME", help="print the JSON schema of NAME's config")
    drivers.add_argument("--config", type=Path, help="TOML file with [drivers.NAME] tables")
    drivers.add_argument("--json", action="store_true", help="print JSON")
    drivers.set_defaults(func=_cmd_drivers)
    # sub-command modules import this one (UsageError), so they are imported here, late
    from mmu_notifier.conformance.cli import add_commands as add_conformance
    from mmu_notifier.explore.cli import add_commands as add_explore
    from mmu_notifier.workload.cli import add_commands as add_run

    add_run(sub)
    add_explore(sub)
    add_conformance(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmu-notifier`` script."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except (UsageError, ConfigError) as error:
        print(f"mmu-notifier: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
