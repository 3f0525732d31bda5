"""Per-thread timelines of an execution, as text lanes and as JSON.

The text form gives each thread a column, so the interleaving that led to a
failure reads top to bottom the way a race is drawn in a commit message::

    step  A                          B
       0  start
       1                             start
       2                             srcu_read_lock srcu ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmu_notifier.explore.describe import describe
from mmu_notifier.explore.findings import Problem
from mmu_notifier.explore.scheduler import Outcome

#: widest column a thread gets in the text form
_MAX_LANE = 40


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
