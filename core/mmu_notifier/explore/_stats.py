"""Exploration statistics: how much was explored, how fast, and what it cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Stats:
    """Counters of one exploration.

    ``schedules`` counts executions run; ``distinct`` the different step
    sequences among them; ``failing`` the executions with a finding;
    ``pruned`` those a reduction abandoned as equivalent to one explored;
    ``step_bound`` those stopped by the livelock guard.
    """

    schedules: int = 0
    distinct: int = 0
    failing: int = 0
    pruned: int = 0
    step_bound: int = 0
    steps_total: int = 0
    steps_min: int = 0
    steps_max: int = 0
    elapsed: float = 0.0

    def count(self, steps: int, hit_bound: bool) -> None:
        """Account for one execution of ``steps`` steps."""
        if not self.schedules or steps < self.steps_min:
            self.steps_min = steps
        if steps > self.steps_max:
            self.steps_max = steps
        self.schedules += 1
        self.steps_total += steps
        self.step_bound += hit_bound

    @property
    def steps_avg(self) -> float:
        """Mean steps per schedule."""
        return self.steps_total / self.schedules if self.schedules else 0.0

    @property
    def schedules_per_s(self) -> float:
        """Throughput in schedules per second."""
        return self.schedules / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def steps_per_s(self) -> float:
        """Throughput in steps per second."""
        return self.steps_total / self.elapsed if self.elapsed > 0 else 0.0

    def text(self) -> str:
        """Two report lines."""
        return (
            f"  schedules {self.schedules} (distinct {self.distinct}, failing {self.failing}, "
            f"pruned {self.pruned}, step-bound {self.step_bound}) in {self.elapsed:.3f} s\n"
            f"  steps/schedule min {self.steps_min} avg {self.steps_avg:.1f} max {self.steps_max}; "
            f"{self.schedules_per_s:,.0f} schedules/s, {self.steps_per_s:,.0f} steps/s"
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, rates included."""
        return {
            "schedules": self.schedules,
            "distinct": self.distinct,
            "failing": self.failing,
            "pruned": self.pruned,
            "step_bound": self.step_bound,
            "steps": {"min": self.steps_min, "avg": round(self.steps_avg, 2), "max": self.steps_max},
            "elapsed_s": round(self.elapsed, 6),
            "schedules_per_s": round(self.schedules_per_s, 1),
            "steps_per_s": round(self.steps_per_s, 1),
        }
