"""The run summary: the JSON-ready document of a run, and the table a person reads at a glance.

:func:`document` turns a run's result into one JSON-ready document;
:func:`render` prints it as one table, drivers as rows, then totals.

``alloc`` counts the subscriptions the core received (``alloc_notifier``
results, and subscriptions a driver registered itself, as 5.4 amdkfd does)
and ``freed`` the ``free_notifier`` calls, so on a clean run they are equal; ``attach`` and ``detach`` count the opens
and closes of the device through the exercisers, which mostly share one
subscription per (driver, mm). Drivers left out of the run (broken plugins),
steps that failed because a driver raised (the tracebacks of the drivers'
faults), the traceback of an exception that ended a process on an OS thread
(threads mode), and a run stopped by the watchdog or Ctrl-C are in the
document and on the page.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmu_notifier.workload.stats import DriverStats

if TYPE_CHECKING:
    from mmu_notifier.workload.runner import RunResult

#: the table's columns: the title when the terminal is wide enough, the short title when it is not
COLUMNS = (
    ("driver", "driver"),
    ("alloc", "alloc"),
    ("freed", "freed"),
    ("attach", "att"),
    ("detach", "det"),
    ("peak users", "peak"),
    ("invalidations", "inval"),
    ("refused", "refus"),
    ("releases", "rel"),
    ("dev faults", "faults"),
    ("retries", "retry"),
    ("violations", "viol"),
)

#: the width a summary is laid out for when nobody says (a pipe has no width; 80 is the classic terminal)
DEFAULT_WIDTH = 80


def _values(stats: dict[str, Any]) -> list[int]:
    return [
        stats["allocated"],
        stats["freed"],
        stats["attaches"],
        stats["detaches"],
        stats["peak_users"],
        sum(stats["invalidations"].values()),
        stats["nonblock_refusals"],
        stats["releases"],
        stats["device_faults"],
        stats["retries"],
        len(stats["violations"]),
    ]


def _compact(value: int) -> str:
    """``value`` in at most 5 characters: 12345 is ``12.3k``, 4567890 is ``4.6M`` (the JSON keeps the exact one)."""
    if value < 10_000:
        return str(value)
    for limit, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if value >= limit:
            scaled = value / limit
            return f"{scaled:.1f}{suffix}" if scaled < 100 else f"{scaled:.0f}{suffix}"
    return str(value)  # not reached: 10,000 and more is at least 10k


@dataclass(frozen=True)
class Layout:
    """How the driver table is laid out for one width: titles, cells, and the gap between columns."""

    titles: list[str]
    rows: list[list[str]]
    gap: int

    @property
    def widths(self) -> list[int]:
        """Each column's width: its widest cell or title."""
        return [max(len(title), *(len(row[i]) for row in self.rows)) for i, title in enumerate(self.titles)]

    @property
    def width(self) -> int:
        """The width of one line of the table."""
        return sum(self.widths) + self.gap * (len(self.titles) - 1)

    def parts(self, width: int | None) -> list[Layout]:
        """The table cut into tables no wider than ``width``, each with the driver column first (the way a
        wide table is printed on a narrow page): itself when it fits."""
        if width is None or self.width <= width:
            return [self]
        widths = self.widths
        groups: list[list[int]] = [[]]
        used = widths[0]
        for index in range(1, len(self.titles)):
            if groups[-1] and used + self.gap + widths[index] > width:
                groups.append([])
                used = widths[0]
            groups[-1].append(index)
            used += self.gap + widths[index]
        return [Layout([self.titles[0], *(self.titles[i] for i in group)],
                       [[row[0], *(row[i] for i in group)] for row in self.rows], self.gap) for group in groups]


def layout(doc: dict[str, Any], width: int | None) -> Layout:
    """The widest layout of the driver table that fits ``width`` (None: no limit, the full titles).

    Tried in turn: full titles; short titles; short titles one space apart; and, last, numbers of five
    digits and more abbreviated (``12.3k``). When even that does not fit, the last one is used and
    printed in :meth:`Layout.parts` (nothing is cut).
    """
    named = [*doc["drivers"].items(), ("total", doc["totals"])]
    exact = [[name, *map(str, _values(stats))] for name, stats in named]
    short = [[name, *map(_compact, _values(stats))] for name, stats in named]
    candidates = [
        Layout([long for long, _ in COLUMNS], exact, 2),
        Layout([brief for _, brief in COLUMNS], exact, 2),
        Layout([brief for _, brief in COLUMNS], exact, 1),
        Layout([brief for _, brief in COLUMNS], short, 1),
    ]
    if width is None:
        return candidates[0]
    return next((candidate for candidate in candidates if candidate.width <= width), candidates[-1])


def _plain_tables(table: Layout, width: int | None) -> list[str]:
    lines: list[str] = []
    for part in table.parts(width):
        lines += [*([""] if lines else []), *_plain_table(part)]
    return lines


def _plain_table(table: Layout) -> list[str]:
    gap = " " * table.gap
    widths = table.widths

    def line(cells: list[str]) -> str:
        return gap.join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(cells, widths,
                                                                                               strict=True)))

    rule = "-" * table.width
    return [line(table.titles), rule, *map(line, table.rows[:-1]), rule, line(table.rows[-1])]


def _lines(doc: dict[str, Any], width: int | None, wrap: bool) -> list[tuple[str, str]]:
    """Every line after the table, with the style it has on a terminal ("" for none)."""
    lines: list[tuple[str, str]] = [("", ""), ("invalidations by event type:", "")]
    for name, stats in [*doc["drivers"].items(), ("total", doc["totals"])]:
        events = ", ".join(f"{k} {v}" for k, v in stats["invalidations"].items()) or "none"
        text = f"  {name:<10} {events}"
        if width is not None and len(text) > width:
            text = textwrap.fill(events, width, initial_indent=f"  {name:<10} ", subsequent_indent=" " * 13,
                                 break_on_hyphens=False)
        lines += [(part, "") for part in text.splitlines()]
    rate = doc["events_per_second"]
    failed = f", {doc['failed_steps']} failed" if doc.get("failed_steps") else ""
    counts = (f"{doc['steps']} steps ({doc['skipped_steps']} skipped{failed}), {doc['callbacks']} driver callbacks, "
              f"{doc['events']} events in {doc['wall_seconds']:.2f} s ({rate:,.0f} events/s)")
    folded = textwrap.wrap(counts, width) if wrap and width is not None else [counts]
    lines += [(part, "dim") for part in folded]

    def bullets(entries: list[str], style: str) -> None:
        for entry in entries:
            text = f"  - {entry}"
            if wrap and width is not None and len(text) > width:
                text = textwrap.fill(entry, width, initial_indent="  - ", subsequent_indent="      ",
                                     break_on_hyphens=False)
            lines.extend((part, style) for part in text.splitlines())

    left_out = doc.get("left_out") or {}
    if left_out:
        lines.append((f"LEFT OUT ({len(left_out)} broken driver plugin(s)):", "bold red"))
        bullets([f"{name}: {reason}" for name, reason in left_out.items()], "")
    problems = doc["violations"] + [f"{name}: {v}" for name, s in doc["drivers"].items() for v in s["violations"]]
    if problems:
        lines.append((f"VIOLATIONS ({len(problems)}):", "bold red"))
        bullets(problems, "")
    else:
        lines.append(("no violations", "bold green"))
    known = [f"{name}: {v}" for name, s in doc["drivers"].items() for v in s.get("known_kernel_behaviour", [])]
    if known:
        heading = f"known kernel behaviour, not counted as violations ({len(known)}):"
        lines += [(part, "yellow") for part in (textwrap.wrap(heading, width) if wrap and width else [heading])]
        bullets(known, "")
    for name, stats in doc["drivers"].items():
        for text in stats.get("tracebacks", ()):
            lines.append((f"traceback of {name}'s fault:", "red"))
            lines += [(f"    {line}", "") for line in text.rstrip().splitlines()]
    for name, text in (doc.get("tracebacks") or {}).items():
        lines.append((f"traceback of the exception that ended {name}:", "red"))
        lines += [(f"    {line}", "") for line in text.rstrip().splitlines()]
    return lines


def render(doc: dict[str, Any], width: int | None = None, colour: bool = False, wrap: bool = False) -> str:
    """The summary document of :func:`document` as text ``width`` columns wide (None: as wide as it needs).

    The driver table takes the widest :func:`layout` that fits. ``colour`` draws it with rich for a
    terminal (bold titles, the violations column red where a driver has any, the verdict in colour);
    without it the text is plain, for a pipe, a file or ``NO_COLOR``. ``wrap`` folds the long lines
    (violations, known behaviour) under their bullet to ``width``, as a terminal reader wants; piped
    output keeps one line per violation, for ``grep``.
    """
    table = layout(doc, width)
    head = [(f"workload {doc['workload']!r}, {doc['mode']}, seed {doc['seed']}", "bold"), ("", "")]
    if doc.get("stopped"):
        head += [(f"STOPPED ({doc['stopped']}): the summary of what ran until then", "bold red"), ("", "")]
    tail = _lines(doc, width, wrap)
    if not colour:
        return "\n".join([*(text for text, _ in head), *_plain_tables(table, width), *(text for text, _ in tail)])
    return _rich(table, head, tail, width or table.width)


def _rich(table: Layout, head: list[tuple[str, str]], tail: list[tuple[str, str]], width: int) -> str:
    """The summary drawn by rich for a terminal ``width`` columns wide, as text with colour codes."""
    from rich.box import Box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # rules under the titles and above the total, no vertical lines: the column divider is one space, and a
    # left padding of one more makes a gap of two
    rules = Box("    \n    \n ── \n    \n ── \n ── \n    \n    \n")
    violations = {COLUMNS[-1][0], COLUMNS[-1][1]}
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=True, color_system="standard", highlight=False,
                      no_color=False)
    for text, style in head:
        console.print(Text(text, style=style))
    for number, part in enumerate(table.parts(width)):
        grid = Table(box=rules, show_edge=False, pad_edge=False, padding=(0, 0, 0, part.gap - 1),
                     header_style="bold cyan")
        for index, title in enumerate(part.titles):
            if index:
                grid.add_column(title, justify="right", no_wrap=True)
            else:
                grid.add_column(title, overflow="fold", style="bold")
        last = len(part.rows) - 1
        for row_number, row in enumerate(part.rows):
            cells: list[Text | str] = [
                Text(cell, style="green" if cell == "0" else "bold red") if part.titles[i] in violations else cell
                for i, cell in enumerate(row)
            ]
            grid.add_row(*cells, end_section=row_number == last - 1, style="bold" if row_number == last else None)
        if number:
            console.print()
        console.print(grid)
    for text, style in tail:
        console.print(Text(text, style=style), soft_wrap=True)
    return buffer.getvalue().rstrip("\n")


def document(result: RunResult) -> dict[str, Any]:
    """A JSON-ready summary document."""
    totals = DriverStats()
    for stats in result.drivers.values():
        totals.subscriptions |= stats.subscriptions
        totals.allocated += stats.allocated
        totals.attaches += stats.attaches
        totals.detaches += stats.detaches
        totals.freed += stats.freed
        totals.peak_users = max(totals.peak_users, stats.peak_users)
        totals.invalidations.update(stats.invalidations)
        totals.refusals += stats.refusals
        totals.releases += stats.releases
        totals.device_faults += stats.device_faults
        totals.retries += stats.retries
        totals.violations += stats.violations
        totals.known += stats.known
    json_totals = totals.to_json()
    json_totals["tracebacks"] = []  # each is shown under its driver
    return {
        "workload": result.workload,
        "mode": result.mode,
        "seed": result.seed,
        "ok": result.ok,
        "drivers": {name: stats.to_json() for name, stats in sorted(result.drivers.items())},
        "totals": json_totals,
        "steps": result.steps,
        "skipped_steps": result.skipped,
        "failed_steps": result.failed_steps,
        "callbacks": result.callbacks,
        "scheduler_steps": result.scheduler_steps,
        "events": result.events,
        "wall_seconds": round(result.wall, 4),
        "events_per_second": round(result.events / result.wall, 1) if result.wall else None,
        "violations": result.violations,
        "tracebacks": dict(result.tracebacks),
        "left_out": dict(result.left_out or {}),
        "stopped": result.stopped,
    }
