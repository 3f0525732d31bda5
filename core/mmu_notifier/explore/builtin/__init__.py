"""The built-in scenarios: the patch-09 race and its get/put fix, the interval-notifier (5.5) bugs, and the
lock-rule demonstrations."""

from __future__ import annotations

from mmu_notifier.explore.builtin import interval, locks, notifier
from mmu_notifier.explore.scenario import Scenario

BUILTIN: tuple[Scenario, ...] = (*notifier.SCENARIOS, *interval.SCENARIOS, *locks.SCENARIOS)

__all__ = ["BUILTIN"]
