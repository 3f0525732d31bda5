"""Minimisation: fewer preemptions, then fewer steps, same failure."""

from __future__ import annotations

from mmu_notifier.scenarios import explore, replay


def test_minimised_schedule_is_simpler_and_fails_the_same_way() -> None:
    for seed in range(5):
        bug = explore("unregister-no-release", "random", budget=1000, seed=seed).bugs[0]
        assert bug.minimised is not None
        assert bug.minimised_preemptions <= bug.preemptions
        if bug.minimised_preemptions == bug.preemptions:
            assert bug.minimised_steps <= bug.steps
        again = replay("unregister-no-release", bug.minimised)
        assert again.problem is not None and again.problem.signature == bug.problem.signature
        assert bug.minimised_preemptions == 2  # the race needs exactly two preemptions


def test_abba_needs_one_preemption() -> None:
    bug = explore("abba-deadlock", "random", budget=100, seed=0).bugs[0]
    assert bug.minimised_preemptions == 1
