"""Draw a run's or a finding's timeline as swimlanes: one lane per thread, one mark per step.

Marks are coloured by what the step did (locks, SRCU sections and frees,
notifier-list walks into driver callbacks, waits, atomics), each with a tooltip
naming the step; a problem is drawn as a red line at its step. ``.svg`` gives a
picture, ``.html`` the same picture in a page with a legend.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from mmu_notifier.explore.timeline import Timeline

CATEGORIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("SRCU / frees", "#2e9d5b", ("srcu", "synchronize", "call_srcu")),
    ("callback walk", "#d98c1f", ("walk",)),
    ("lock", "#3b6fd1", ("spin", "mutex", "down", "up")),
    ("wait / wake", "#8a5cc2", ("wait", "wake", "complete")),
    ("atomic", "#7a7a7a", ("atomic",)),
)
OTHER = ("other", "#b5b5b5")
LANE, LABEL, MAX_WIDTH = 22, 150, 4000


def category(op: str) -> tuple[str, str]:
    """(name, colour) of a step's operation."""
    for name, colour, prefixes in CATEGORIES:
        if op.startswith(prefixes):
            return name, colour
    return OTHER


def svg(timeline: Timeline, title: str = "timeline") -> str:
    """The timeline as an SVG document."""
    lanes = [name for name in timeline.threads if any(s.thread == name for s in timeline.steps)]
    row = {name: i for i, name in enumerate(lanes)}
    count = max(1, len(timeline.steps))
    step_width = max(0.25, min(8.0, MAX_WIDTH / count))
    width = LABEL + count * step_width + 20
    height = 40 + LANE * len(lanes) + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        f'font-family="monospace" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<text x="4" y="16">{escape(title)}: {len(timeline.steps)} steps, {escape(timeline.status)}</text>',
    ]
    for name, i in row.items():
        y = 30 + i * LANE
        out.append(f'<text x="4" y="{y + 14}" class="lane">{escape(name)}</text>')
        out.append(f'<line x1="{LABEL}" y1="{y + LANE / 2}" x2="{width - 10}" y2="{y + LANE / 2}" stroke="#eee"/>')
    for step in timeline.steps:
        kind, colour = category(step.op)
        x = LABEL + step.index * step_width
        y = 30 + row[step.thread] * LANE + 3
        tip = escape(f"step {step.index}: {step.thread} {step.op} {step.resource} [{kind}]")
        out.append(
            f'<rect x="{x:.2f}" y="{y}" width="{max(step_width, 0.5):.2f}" height="{LANE - 6}" fill="{colour}" '
            f'data-op="{escape(step.op)}"><title>{tip}</title></rect>'
        )
    problem = timeline.problem
    if problem is not None:
        x = LABEL + min(problem.step, count) * step_width
        label = escape(f"{problem.kind}: {problem.message}")
        out.append(f'<line x1="{x:.2f}" y1="24" x2="{x:.2f}" y2="{height - 10}" stroke="red" stroke-width="2">'
                   f"<title>{label}</title></line>")
        out.append(f'<text x="{x + 4:.2f}" y="{height - 4}" fill="red" class="problem">{label}</text>')
    out.append("</svg>")
    return "\n".join(out)


def html(timeline: Timeline, title: str = "timeline") -> str:
    """The SVG in a page with a legend."""
    legend = "".join(
        f'<li><span style="background:{colour}">&nbsp;&nbsp;&nbsp;</span> {escape(name)}</li>'
        for name, colour, _ in (*CATEGORIES, (*OTHER, ()))
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title></head>"
        f"<body><h1>{escape(title)}</h1><ul>{legend}</ul><div style='overflow-x:auto'>{svg(timeline, title)}</div>"
        "</body></html>"
    )


def write(timeline: Timeline, path: Path, title: str = "timeline") -> None:
    """Write ``path`` as SVG or HTML, by its suffix."""
    if path.suffix == ".svg":
        path.write_text(svg(timeline, title))
    elif path.suffix in (".html", ".htm"):
        path.write_text(html(timeline, title))
    else:
        raise ValueError(f"timeline file {path}: expected a .svg or .html name")
