"""What the ``mmu-notifier`` sub-command modules share: imported by them, it imports none of them.

:mod:`mmu_notifier.cli` imports each sub-command module (``run``, ``explore``
and ``replay``, ``conformance``) and adds its commands; the sub-command
modules take their shared checks from here and their error type
(:class:`~mmu_notifier.errors.UsageError`) from :mod:`mmu_notifier.errors`, so
no import goes back up to the top-level CLI.

Every check here runs before any work: a command refuses a bad flag, an
output file it could not write, or a driver name nobody installed, with one
line, before the first step runs (and before anything is written).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from mmu_notifier.errors import ConfigError, PluginError, UsageError

#: the file suffixes ``--timeline FILE`` draws (see :meth:`mmu_notifier.explore.Timeline.write`)
TIMELINE_SUFFIXES = (".svg", ".html", ".htm")


def check_output_path(flag: str, path: Path | None) -> None:
    """Refuse an output file that cannot be written: its directory is missing, or it is a directory."""
    if path is None:
        return
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: the directory {str(parent)!r} does not exist")
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{flag} {path}: not writable")


def check_timeline_option(path: Path | None) -> None:
    """Refuse a ``--timeline`` file that is neither SVG nor HTML, or cannot be written, before anything runs."""
    if path is not None and path.suffix not in TIMELINE_SUFFIXES:
        raise UsageError(f"--timeline {path}: expected a .svg or .html file name")
    check_output_path("--timeline", path)


def check_input_file(flag: str, path: Path | None) -> None:
    """Refuse an input file that does not exist or is not a regular file."""
    if path is not None and not path.is_file():
        why = "is a directory" if path.is_dir() else "no such file"
        raise UsageError(f"{flag} {path}: {why}")


def driver_settings(config_file: Path | None, installed: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Driver settings from ``--config FILE`` and the environment, refusing settings for a driver that is
    not installed (a typo would otherwise be ignored): one line naming the table or the variable."""
    from mmu_notifier import config as config_mod  # pydantic: only for a command that reads driver settings

    check_input_file("--config", config_file)
    names = set(installed)
    file_settings = config_mod.read_toml(config_file) if config_file else {}
    for driver in file_settings:
        if driver not in names:
            raise UsageError(f"--config {config_file}: [drivers.{driver}]: no installed driver is named "
                             f"{driver!r} (installed: {', '.join(sorted(names)) or 'none'})")
    environ = config_mod.read_environ()
    for driver in environ:
        if driver not in names:
            variables = sorted(key for key in os.environ if key.lower().startswith(f"mmu_notifier_{driver}__"))
            raise UsageError(f"environment variable {variables[0] if variables else driver}: no installed driver "
                             f"is named {driver!r} (installed: {', '.join(sorted(names)) or 'none'})")
    return config_mod.merge_sources(file_settings, environ)


def select_drivers(installed: Iterable[str], only: list[str] | None, skip: list[str] | None) -> list[str] | None:
    """The drivers ``--driver``/``--skip-driver`` choose (``None``: every installed one); unknown names refused."""
    names = list(installed)
    for flag, given in (("--driver", only), ("--skip-driver", skip)):
        for name in given or ():
            if name not in names:
                raise UsageError(f"{flag} {name}: no installed driver is named {name!r} "
                                 f"(installed: {', '.join(sorted(names)) or 'none'})")
    if not only and not skip:
        return None
    chosen = [name for name in names if (not only or name in only) and name not in (skip or ())]
    if not chosen:
        raise UsageError("--driver/--skip-driver leave no driver to use")
    return chosen


def add_driver_selection(parser: Any) -> None:
    """Add ``--driver NAME`` and ``--skip-driver NAME`` (both repeatable) to a sub-command."""
    parser.add_argument("--driver", action="append", metavar="NAME", help="use only driver NAME (repeatable)")
    parser.add_argument("--skip-driver", action="append", metavar="NAME", help="leave driver NAME out (repeatable)")


def one_line(error: BaseException) -> str:
    """An exception's message as one line (the first line of a multi-line message, the type if empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def report_left_out(failed: Mapping[str, Exception], command: str) -> None:
    """Say which drivers are left out of a command because their plugins are broken (stderr, one line each)."""
    for name, error in sorted(failed.items()):
        reason = error.reason if isinstance(error, PluginError) else one_line(error)
        if isinstance(error, ConfigError):
            reason = "; ".join(error.problems)
        print(f"mmu-notifier {command}: driver {name!r} left out (broken plugin): {reason}", file=sys.stderr)


def styled(stream: TextIO | None = None) -> bool:
    """True when output may use colour and boxes: a terminal, and ``NO_COLOR`` unset (https://no-color.org)."""
    stream = stream or sys.stdout
    return stream.isatty() and not os.environ.get("NO_COLOR")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], stream: TextIO | None = None) -> str:
    """A table with a header row, as text for ``stream`` (stdout by default).

    On a terminal (and without ``NO_COLOR``) it is drawn with rich, in colour,
    fitted to the terminal's width (long cells wrap inside their column); piped,
    it is plain text: columns aligned to their widest cell, nothing cut, so a
    long name shifts the columns instead of breaking the row.
    """
    stream = stream or sys.stdout
    if styled(stream):
        from io import StringIO

        from rich.console import Console
        from rich.table import Table

        grid = Table(show_header=True, header_style="bold cyan", show_lines=False)
        for header in headers:
            grid.add_column(header, overflow="fold")
        for row in rows:
            grid.add_row(*row)
        buffer = StringIO()
        Console(file=buffer, width=shutil.get_terminal_size().columns, force_terminal=True).print(grid)
        return buffer.getvalue().rstrip("\n")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)
