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
from mmu_notifier.explore._scheduler import Event, Outcome

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
#: marks drawn over the lanes: (name, colour) of allocations, frees and the problem
MARKS: tuple[tuple[str, str], ...] = (("allocation", "#1a7f37"), ("free", "#cf222e"), ("problem", "red"))
_LANE, _MAX_WIDTH, _CHAR = 24, 4000, 7.3
_FREES = ("kfree", "free_notifier")
#: the page shows the text form below the picture up to this many steps
_TEXT_IN_PAGE = 2000


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
    #: allocations and frees during the run (``Event.step`` None: while the scenario was built)
    marks: tuple[Event, ...] = ()
    #: the lane of each thread drawn in another's (background threads grouped by their name)
    grouped: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, outcome: Outcome, group_background: bool = False) -> Timeline:
        """Build the timeline of an execution.

        ``group_background`` draws every background thread (an SRCU callback,
        a kworker: the explorer's daemons) in one lane per name, ``kworker/events``
        for ``kworker/events#12`` too, instead of one lane each (the main job's
        timeline, where hundreds of them run).
        """
        names = tuple(t.name for t in outcome.threads)
        steps = tuple(
            Step(i, names[t], op, describe(res, with_kind=False))
            for i, (t, op, res) in enumerate(outcome.trace)
        )
        grouped: tuple[tuple[str, str], ...] = ()
        if group_background:
            grouped = tuple(
                (t.name, t.name.split("#", 1)[0] + " (background)") for t in outcome.threads if t.daemon
            )
        return cls(names, steps, outcome.status, outcome.problem, outcome.events, grouped)

    def lane(self, thread: str) -> str:
        """The lane ``thread`` is drawn in (its own unless background threads are grouped)."""
        return dict(self.grouped).get(thread, thread)

    def _active(self) -> list[str]:
        lane_of = dict(self.grouped)
        used = {lane_of.get(s.thread, s.thread) for s in self.steps}
        lanes = dict.fromkeys(lane_of.get(name, name) for name in self.threads)
        return [name for name in lanes if name in used]

    def text(self) -> str:
        """The timeline with one column per thread (only threads that took a step).

        Allocations and frees are marked under the step during which they
        happened (``+ kmalloc X``, ``- kfree X``); the problem's line names its step.
        """
        cells = [f"{step.op} {step.resource}".strip() for step in self.steps]
        lane = min(_MAX_LANE, max([len(c) for c in cells] + [len(n) for n in self.threads] + [8]) + 2)
        active = self._active()
        column = {name: i for i, name in enumerate(active)}
        marks: dict[int | None, list[Event]] = {}
        for event in self.marks:
            marks.setdefault(event.step, []).append(event)

        def mark_lines(at: int | None) -> list[str]:
            out = []
            for event in marks.get(at, ()):
                sign = "-" if event.what in _FREES else "+"
                indent = " " * (lane * column[self.lane(event.thread)]) if self.lane(event.thread) in column else ""
                where = "setup" if at is None else ""
                out.append(f"{where:>4}  {indent}{sign} {event.what} {event.label}")
            return out

        header = "step  " + "".join(name[: lane - 1].ljust(lane) for name in active)
        lines = [header.rstrip(), *mark_lines(None)]
        for step, cell in zip(self.steps, cells, strict=True):
            lines.append(f"{step.index:4}  " + " " * (lane * column[self.lane(step.thread)]) + cell[: lane - 1])
            lines += mark_lines(step.index)
        problem = self.problem
        if problem is not None and not problem.predictive:
            who = self.lane(problem.thread) if problem.thread else None
            indent = " " * (lane * column[who]) if who in column else ""
            lines.append(f"{'!!':>4}  {indent}{problem.kind} at step {problem.step}: {problem.message}")
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
            "marks": [{"step": e.step, "thread": e.thread, "what": e.what, "label": e.label} for e in self.marks],
            "per_thread": {name: [s.index for s in self.steps if s.thread == name] for name in self.threads},
        }

    def svg(self, title: str = "timeline") -> str:
        """The timeline as an SVG document sized to its content.

        A title line, one lane per thread that took a step (its name at the
        left, wide enough for the longest), one coloured mark per step with a
        tooltip, labelled marks for allocations (green, ``+``), frees (red,
        ``x``) and the problem (a red line with its label), and a legend.
        """
        lanes = self._active()
        row = {name: i for i, name in enumerate(lanes)}
        count = max(1, len(self.steps))
        step_width = min(12.0, _MAX_WIDTH / count)
        label_w = _CHAR * max([len(n) for n in lanes] + [6]) + 16
        heading = f"{title}: {len(self.steps)} steps, {self.status}"
        problem = self.problem
        problem_label = f"step {problem.step}: {problem.kind}: {problem.message}" if problem is not None else ""
        legend = [(name, colour) for name, colour, _ in CATEGORIES] + [OTHER, *MARKS]
        legend_w = sum(_CHAR * len(name) + 30 for name, _ in legend)
        lanes_top = 30
        lanes_bottom = lanes_top + _LANE * len(lanes)
        mark_rows = 2 if self.marks else 0
        problem_y = lanes_bottom + 14 * mark_rows + 18
        legend_y = problem_y + (18 if problem is not None else 0) + 6
        height = legend_y + 22
        width = max(
            label_w + count * step_width + 20,
            _CHAR * len(heading) + 16,
            _CHAR * len(problem_label) + 16,
            legend_w + 16,
        )
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="monospace" font-size="12">',
            f"<title>{escape(title)}</title>",
            f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="white"/>',
            f'<text x="6" y="18" font-weight="bold" class="title">{escape(heading)}</text>',
        ]
        for name, i in row.items():
            y = lanes_top + i * _LANE
            out.append(f'<text x="6" y="{y + 16}" class="lane">{escape(name)}</text>')
            out.append(
                f'<line x1="{label_w:.1f}" y1="{y + _LANE / 2}" x2="{width - 10:.1f}" y2="{y + _LANE / 2}" '
                'stroke="#eee"/>'
            )
        for first, last, lane_name in self._runs(step_width):
            step = self.steps[first]
            kind, colour = category(step.op)
            x = label_w + first * step_width
            y = lanes_top + row[lane_name] * _LANE + 3
            span = f"step {first}" if first == last else f"steps {first}-{last}"
            tip = escape(f"{span}: {step.thread} {step.op} {step.resource} [{kind}]")
            w = max((last - first + 1) * step_width - 0.5, 0.5)
            out.append(
                f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{_LANE - 6}" '
                f'fill="{colour}" class="step" data-op="{escape(step.op)}"><title>{tip}</title></rect>'
            )
        for n, event in enumerate(self.marks):
            at = -0.5 if event.step is None else event.step + 0.5
            x = label_w + at * step_width
            free = event.what in _FREES
            colour = MARKS[1][1] if free else MARKS[0][1]
            lane = row.get(self.lane(event.thread))
            cy = lanes_top + (lane if lane is not None else 0) * _LANE + _LANE / 2
            text_y = lanes_bottom + 14 * (1 + n % 2)
            label = f"{'x' if free else '+'} {event.what} {event.label}" + (
                "" if event.step is None else f" (step {event.step})"
            )
            out.append(
                f'<g class="mark {"free" if free else "alloc"}"><title>{escape(label)} by {escape(event.thread)}'
                f'</title><circle cx="{x:.2f}" cy="{cy:.1f}" r="4" fill="{colour}" stroke="white"/>'
                f'<line x1="{x:.2f}" y1="{cy:.1f}" x2="{x:.2f}" y2="{text_y - 10}" stroke="{colour}" '
                f'stroke-dasharray="2,2"/><text x="{min(x + 3, width - _CHAR * len(label) - 4):.2f}" '
                f'y="{text_y}" fill="{colour}">{escape(label)}</text></g>'
            )
        if problem is not None:
            x = label_w + (min(problem.step, count - 1) + 1) * step_width
            label = escape(problem_label)
            out.append(
                f'<g class="problem"><title>{label}</title><line x1="{x:.2f}" y1="24" x2="{x:.2f}" '
                f'y2="{problem_y - 12}" stroke="red" stroke-width="2"/>'
                f'<text x="6" y="{problem_y}" fill="red">{label}</text></g>'
            )
        x = 6.0
        out.append(f'<g class="legend" transform="translate(0 {legend_y})">')
        for name, colour in legend:
            out.append(
                f'<rect x="{x:.1f}" y="0" width="14" height="12" fill="{colour}"/>'
                f'<text x="{x + 18:.1f}" y="11">{escape(name)}</text>'
            )
            x += _CHAR * len(name) + 30
        out += ["</g>", "</svg>"]
        return "\n".join(out)

    def _runs(self, step_width: float) -> list[tuple[int, int, str]]:
        """(first, last, lane) of the marks to draw: one per step, or, when steps are narrower
        than a pixel, one per lane and 2-pixel column (a main job's long run stays a few thousand
        marks; the tooltip names the column's first step and its span)."""
        if step_width >= 1.0:
            return [(step.index, step.index, self.lane(step.thread)) for step in self.steps]
        per_column = 2.0 / step_width
        open_runs: dict[tuple[int, str], int] = {}
        runs: list[tuple[int, int, str]] = []
        for step in self.steps:
            lane = self.lane(step.thread)
            key = (int(step.index / per_column), lane)
            at = open_runs.get(key)
            if at is None:
                open_runs[key] = len(runs)
                runs.append((step.index, step.index, lane))
            else:
                runs[at] = (runs[at][0], step.index, lane)
        return runs

    def html(self, title: str = "timeline") -> str:
        """The SVG picture in a page with a heading and the text form below it."""
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title></head>"
            f"<body><h1>{escape(title)}</h1><div style='overflow-x:auto'>{self.svg(title)}</div>"
            + (f"<pre>{escape(self.text())}</pre>" if len(self.steps) <= _TEXT_IN_PAGE else "")
            + "</body></html>"
        )

    def write(self, path: Path, title: str = "timeline") -> None:
        """Write the picture to ``path``: SVG or HTML by its suffix (``.svg``, ``.html`` or ``.htm``)."""
        if path.suffix == ".svg":
            path.write_text(self.svg(title))
        elif path.suffix in (".html", ".htm"):
            path.write_text(self.html(title))
        else:
            raise ValueError(f"timeline file {path}: expected a .svg or .html name")
