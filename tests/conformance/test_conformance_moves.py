"""The names the house step moved stay importable from their old places for one release."""

from __future__ import annotations

import pytest

from mmu_notifier import invariants
from mmu_notifier.conformance import harness, races
from mmu_notifier.workload import runner, summary


def test_the_race_checks_old_harness_names_are_the_races_modules() -> None:
    assert harness.RACES is races.RACES
    assert harness.Race is races.Race
    assert harness.replay is races.replay_race
    assert harness.explore_race is races.explore_race
    assert harness.race_scenario is races.race_scenario
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        harness.nothing  # noqa: B018 - the lookup is the test


def test_the_old_violation_and_describe_names_are_the_new_ones() -> None:
    assert invariants.Violation is invariants.InvariantViolation
    assert runner.describe is summary.document
