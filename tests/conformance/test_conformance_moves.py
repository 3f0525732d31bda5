"""The names the house step moved stay importable from their old places for one release."""

from __future__ import annotations

from mmu_notifier import invariants
from mmu_notifier.workload import runner, summary


def test_the_old_violation_and_describe_names_are_the_new_ones() -> None:
    assert invariants.Violation is invariants.InvariantViolation
    assert runner.describe is summary.document
