"""What the ``mmu-notifier`` sub-command modules share: imported by them, it imports none of them.

:mod:`mmu_notifier.cli` imports each sub-command module (``run``, ``explore``
and ``replay``, ``conformance``) and adds its commands; the sub-command
modules take their shared checks from here and their error type
(:class:`~mmu_notifier.errors.UsageError`) from :mod:`mmu_notifier.errors`, so
no import goes back up to the top-level CLI.
"""

from __future__ import annotations

from pathlib import Path

from mmu_notifier.errors import UsageError

#: the file suffixes ``--timeline FILE`` draws (see :meth:`mmu_notifier.explore.Timeline.write`)
TIMELINE_SUFFIXES = (".svg", ".html", ".htm")


def check_timeline_option(path: Path | None) -> None:
    """Refuse a ``--timeline`` file that is neither SVG nor HTML, before anything runs."""
    if path is not None and path.suffix not in TIMELINE_SUFFIXES:
        raise UsageError(f"--timeline {path}: expected a .svg or .html file name")
