"""Per-thread timelines of an execution: text lanes, JSON, and SVG/HTML swimlanes.

The one room for timelines, whatever drew the run (an exploration, a replay,
the main job under the deterministic scheduler). The text form gives each
thread a column, so the interleaving that led to a failure reads top to bottom
the way a race is drawn in a commit message::

    step  A                          B
       0  start
       1                             start
       2                             srcu_read_lock srcu ...

The picture (:meth:`Timeline.svg`, :meth:`Timeline.html`) gives each thread a
lane and each step a mark, coloured by what the step did (locks, SRCU sections
and frees, notifier-list walks into driver callbacks, waits, atomics), each
with a tooltip naming the step; a problem is a red line at its step. ``.svg``
gives the picture, ``.html`` the same picture in a page with a legend.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from mmu_notifier.explore._describe import describe
from mmu_notifier.explore._findings import Problem
from mmu_notifier.explore._scheduler import Outcome

#: widest column a thread gets in the text form
_MAX_LANE = 40

#: the picture's step categories: (name, colour, operation prefixes), first match wins
CATEGORIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("SRCU / frees", "#2e9d5b", ("srcu", "synchronize", "call_srcu")),
    ("callback walk", "#d98c1f", ("walk",)),
    ("lock", "#3b6fd1", ("spin", "mutex", "down", "up")),
    ("wait / wake", "#8a5cc2", ("wait", "wake", "complete")),
    ("atomic", "#7a7a7a", ("atomic",)),
)
OTHER = ("other", "#b5b5b5")
_LANE, _LABEL, _MAX_WIDTH = 22, 150, 4000


def category(op: str) -> tuple[str, str]:
    """(name, colour) of a step's operation in the picture."""
    for name, colour, prefixes in CATEGORIES:
        if op.startswith(prefixes):
            return name, colour
    return OTHER


@dataclass(frozen=True, slots=True)
class Step:
    """One step: which thread performed which operation on what."""

    index: int
    thread: str
    op: str
    resource: str


@dataclass(frozen=True, slots=True)
class Timeline:
    """The steps of one execution and how it ended."""

    threads: tuple[str, ...]
    steps: tuple[Step, ...]
    status: str
    problem: Problem | None

    @classmethod
    def of(cls, outcome: Outcome) -> Timeline:
        """Build the timeline of an execution."""
        names = tuple(t.name for t in outcome.threads)
        steps = tuple(
            Step(i, names[t], op, describe(res, with_kind=False))
            for i, (t, op, res) in enumerate(outcome.trace)
        )
        return cls(names, steps, outcome.status, outcome.problem)

    def text(self) -> str:
        """The timeline with one column per thread (only threads that took a step)."""
        cells = [f"{step.op} {step.resource}".strip() for step in self.steps]
        lane = min(_MAX_LANE, max([len(c) for c in cells] + [len(n) for n in self.threads] + [8]) + 2)
        active = [name for name in self.threads if any(s.thread == name for s in self.steps)]
        column = {name: i for i, name in enumerate(active)}
        header = "step  " + "".join(name[: lane - 1].ljust(lane) for name in active)
        lines = [header.rstrip()]
        for step, cell in zip(self.steps, cells, strict=True):
            lines.append(f"{step.index:4}  " + " " * (lane * column[step.thread]) + cell[: lane - 1])
        if self.problem is not None and not self.problem.predictive:
            who = self.problem.thread
            indent = " " * (lane * column[who]) if who in column else ""
            lines.append(f"{'!!':>4}  {indent}{self.problem.kind}: {self.problem.message}")
        else:
            lines.append(f"{'--':>4}  {self.status}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: threads, steps, and each thread's own step list."""
        return {
            "threads": list(self.threads),
            "status": self.status,
            "steps": [
                {"step": s.index, "thread": s.thread, "op": s.op, "resource": s.resource} for s in self.steps
            ],
            "per_thread": {name: [s.index for s in self.steps if s.thread == name] for name in self.threads},
        }

    def svg(self, title: str = "timeline") -> str:
        """The timeline as an SVG document: one lane per thread that took a step."""
        lanes = [name for name in self.threads if any(s.thread == name for s in self.steps)]
        row = {name: i for i, name in enumerate(lanes)}
        count = max(1, len(self.steps))
        step_width = max(0.25, min(8.0, _MAX_WIDTH / count))
        width = _LABEL + count * step_width + 20
        height = 40 + _LANE * len(lanes) + 20
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
            f'font-family="monospace" font-size="12">',
            f"<title>{escape(title)}</title>",
            f'<text x="4" y="16">{escape(title)}: {len(self.steps)} steps, {escape(self.status)}</text>',
        ]
        for name, i in row.items():
            y = 30 + i * _LANE
            out.append(f'<text x="4" y="{y + 14}" class="lane">{escape(name)}</text>')
            out.append(
                f'<line x1="{_LABEL}" y1="{y + _LANE / 2}" x2="{width - 10}" y2="{y + _LANE / 2}" stroke="#eee"/>'
            )
        for step in self.steps:
            kind, colour = category(step.op)
            x = _LABEL + step.index * step_width
            y = 30 + row[step.thread] * _LANE + 3
            tip = escape(f"step {step.index}: {step.thread} {step.op} {step.resource} [{kind}]")
            out.append(
                f'<rect x="{x:.2f}" y="{y}" width="{max(step_width, 0.5):.2f}" height="{_LANE - 6}" '
                f'fill="{colour}" data-op="{escape(step.op)}"><title>{tip}</title></rect>'
            )
        problem = self.problem
        if problem is not None:
            x = _LABEL + min(problem.step, count) * step_width
            label = escape(f"{problem.kind}: {problem.message}")
            out.append(f'<line x1="{x:.2f}" y1="24" x2="{x:.2f}" y2="{height - 10}" stroke="red" stroke-width="2">'
                       f"<title>{label}</title></line>")
            out.append(f'<text x="{x + 4:.2f}" y="{height - 4}" fill="red" class="problem">{label}</text>')
        out.append("</svg>")
        return "\n".join(out)

    def html(self, title: str = "timeline") -> str:
        """The SVG picture in a page with a legend."""
        legend = "".join(
            f'<li><span style="background:{colour}">&nbsp;&nbsp;&nbsp;</span> {escape(name)}</li>'
            for name, colour, _ in (*CATEGORIES, (*OTHER, ()))
        )
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title></head>"
            f"<body><h1>{escape(title)}</h1><ul>{legend}</ul><div style='overflow-x:auto'>{self.svg(title)}</div>"
            "</body></html>"
        )

    def write(self, path: Path, title: str = "timeline") -> None:
        """Write the picture to ``path``: SVG or HTML by its suffix (``.svg``, ``.html`` or ``.htm``)."""
        if path.suffix == ".svg":
            path.write_text(self.svg(title))
        elif path.suffix in (".html", ".htm"):
            path.write_text(self.html(title))
        else:
            raise ValueError(f"timeline file {path}: expected a .svg or .html name")
