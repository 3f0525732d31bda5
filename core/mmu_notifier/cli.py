"""The ``mmu-notifier`` command line.

Every sub-command lives in the module of its job and registers itself through
an ``add_commands(subparsers)`` function, listed in :data:`COMMANDS`; this
module only parses, dispatches and guards: a
:class:`~mmu_notifier.errors.UsageError` (or a config error) becomes a one-line
message with exit code 2; Ctrl-C a line and exit code 130; any other exception
(a bug of the model) one line asking to report it, exit code 70 (``EX_SOFTWARE``),
with the traceback only under ``--debug``. No user input and no plugin fault
ever ends in a traceback. Imports go one way: this module imports the
sub-command modules, which import neither it nor each other (their shared
checks are in :mod:`mmu_notifier.cli_common`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmu_notifier import __version__
from mmu_notifier.errors import ConfigError, PluginError, UsageError


# The sub-command modules (and the model, pydantic, the plugins) are imported
# when the parser is built, not when this module is, so ``--version`` starts in
# a few tens of milliseconds.
def _run_commands(sub: Any) -> None:
    from mmu_notifier.workload import cli as run_cli

    run_cli.add_commands(sub)


def _explore_commands(sub: Any) -> None:
    from mmu_notifier.scenarios import cli as explore_cli

    explore_cli.add_commands(sub)


def _conformance_commands(sub: Any) -> None:
    from mmu_notifier.conformance import cli as conformance_cli

    conformance_cli.add_commands(sub)


def _scaffold_commands(sub: Any) -> None:
    from mmu_notifier.scaffold import cli as scaffold_cli

    scaffold_cli.add_commands(sub)


#: the sub-command modules' ``add_commands``, in the order ``--help`` lists them (after ``drivers``)
COMMANDS: tuple[Callable[[Any], None], ...] = (
    _run_commands, _explore_commands, _conformance_commands, _scaffold_commands,
)
#: the sub-commands each of :data:`COMMANDS` adds, so a command line naming one builds only its module's
#: parser (``explore`` never imports the main job, pydantic or the plugins); a test keeps it in step
COMMAND_NAMES: dict[str, Callable[[Any], None]] = {
    "run": _run_commands,
    "explore": _explore_commands,
    "replay": _explore_commands,
    "conformance": _conformance_commands,
    "new-plugin": _scaffold_commands,
}


def one_line(error: BaseException) -> str:
    """:func:`mmu_notifier.cli_common.one_line`, imported when first needed."""
    from mmu_notifier.cli_common import one_line as first_line

    return first_line(error)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own errors: one line, exit 2
        raise UsageError(message)


EX_SOFTWARE = 70
EX_INTERRUPTED = 130


def _schema(name: str, entry_points: dict[str, Any]) -> int:
    from mmu_notifier import plugins

    if name not in entry_points:
        raise UsageError(f"no installed driver is named {name!r} (installed: {sorted(entry_points)})")
    try:
        model = plugins.config_model_of(name, plugins.load_factory(entry_points[name]))
        schema = model.model_json_schema()
    except PluginError as error:
        print(f"mmu-notifier drivers: driver {name!r} is broken: {error.reason}", file=sys.stderr)
        return 1
    except Exception as error:  # the plugin's model cannot describe itself
        print(f"mmu-notifier drivers: driver {name!r} is broken: its config model has no JSON schema: "
              f"{type(error).__name__}: {one_line(error)}", file=sys.stderr)
        return 1
    print(json.dumps(schema, indent=2))
    return 0


def _reason(error: Exception) -> str:
    if isinstance(error, ConfigError):
        return "invalid config: " + "; ".join(error.problems)
    return error.reason if isinstance(error, PluginError) else one_line(error)


def _cmd_drivers(args: argparse.Namespace) -> int:
    from mmu_notifier import plugins
    from mmu_notifier.cli_common import driver_settings, table
    from mmu_notifier.kernel import Kernel

    entry_points = {ep.name: ep for ep in plugins.available_drivers()}
    if args.schema:
        return _schema(args.schema, entry_points)
    report = Kernel().drivers.load_entry_points(driver_settings(args.config, entry_points))
    rows: list[dict[str, Any]] = []
    for name, ep in entry_points.items():
        ops = report.loaded.get(name)
        dist = ep.dist.name if ep.dist else "?"
        if ops is not None:
            caps = sorted(getattr(ops.driver, "capabilities", ()))
            rows.append({"name": name, "version": ops.version, "distribution": dist, "capabilities": caps,
                         "config": "valid", "status": "ok", "reason": None})
        else:
            reason = _reason(report.failed[name])
            rows.append({"name": name, "version": ep.dist.version if ep.dist else "?", "distribution": dist,
                         "capabilities": [], "config": f"invalid: {reason}", "status": "broken", "reason": reason})
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no driver plugins are installed (entry-point group mmu_notifier.drivers)")
    else:
        print(table(
            ("driver", "version", "distribution", "config", "capabilities"),
            [(row["name"], row["version"], row["distribution"],
              "valid" if row["status"] == "ok" else f"BROKEN: {row['reason']}",
              ", ".join(row["capabilities"]) or "-")
             for row in rows],
        ))
    return 1 if report.failed else 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser: with every sub-command, or (``command`` named in :data:`COMMAND_NAMES`) ``drivers`` and
    the sub-commands of ``command``'s module only, which parses that command's line the same way."""
    parser = _Parser(prog="mmu-notifier", description="A model of the Linux 5.4 mmu_notifier subsystem.")
    parser.add_argument("--version", action="version", version=f"mmu-notifier {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an internal error (also accepted after the sub-command)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    drivers = sub.add_parser(
        "drivers",
        help="list installed driver plugins and whether their config is valid",
        description="List the installed driver plugins (entry-point group mmu_notifier.drivers) with their "
        "version, distribution, config validity and capabilities; exit 1 if one cannot be loaded.",
        epilog="examples:\n  mmu-notifier drivers\n  mmu-notifier drivers --json | head\n"
        "  mmu-notifier drivers --schema gntdev\n  mmu-notifier drivers --config drivers.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    drivers.add_argument("--schema", metavar="NAME", help="print the JSON schema of NAME's config")
    drivers.add_argument("--config", type=Path, help="TOML file with [drivers.NAME] tables")
    drivers.add_argument("--json", action="store_true", help="print JSON")
    drivers.set_defaults(func=_cmd_drivers)
    chosen = COMMAND_NAMES.get(command or "")
    for add_commands in COMMANDS:
        if chosen is None or add_commands is chosen:
            add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmu-notifier`` script: dispatch, and the guard that never lets a traceback out."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments == ["--version"]:  # answered before anything heavy is imported
        print(f"mmu-notifier {__version__}")
        return 0
    debug = "--debug" in arguments or bool(os.environ.get("MMU_NOTIFIER_DEBUG"))
    arguments = [arg for arg in arguments if arg != "--debug"]
    try:
        args = build_parser(arguments[0] if arguments else None).parse_args(arguments)
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, inside the guard, not at interpreter exit
        return code
    except (UsageError, ConfigError) as error:
        print(f"mmu-notifier: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (``| head``): stop quietly, and keep Python from complaining at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("mmu-notifier: interrupted", file=sys.stderr)
        return EX_INTERRUPTED
    except Exception as error:
        if debug:
            traceback.print_exc()
        print(f"mmu-notifier: internal error: {type(error).__name__}: {one_line(error)} "
              f"(please report this as a bug{'' if debug else '; --debug shows the traceback'})", file=sys.stderr)
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
