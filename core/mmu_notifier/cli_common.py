"""What the ``mmu-notifier`` sub-command modules share: imported by them, it imports none of them.

:mod:`mmu_notifier.cli` imports each sub-command module (``run``, ``explore``
and ``replay``, ``conformance``) and adds its commands; the sub-command
modules take their shared checks from here and their error type
(:class:`~mmu_notifier.errors.UsageError`) from :mod:`mmu_notifier.errors`, so
no import goes back up to the top-level CLI.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from mmu_notifier.errors import UsageError

#: the file suffixes ``--timeline FILE`` draws (see :meth:`mmu_notifier.explore.Timeline.write`)
TIMELINE_SUFFIXES = (".svg", ".html", ".htm")


def check_timeline_option(path: Path | None) -> None:
    """Refuse a ``--timeline`` file that is neither SVG nor HTML, before anything runs."""
    if path is not None and path.suffix not in TIMELINE_SUFFIXES:
        raise UsageError(f"--timeline {path}: expected a .svg or .html file name")


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
