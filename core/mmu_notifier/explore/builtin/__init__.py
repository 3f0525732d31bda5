"""The built-in scenarios: the patch-09 race and its get/put fix, and the lock-rule demonstrations."""

from __future__ import annotations

from mmu_notifier.explore.builtin import locks, notifier
from mmu_notifier.explore.scenario import Scenario

BUILTIN: tuple[Scenario, ...] = (*notifier.SCENARIOS, *locks.SCENARIOS)

__all__ = ["BUILTIN"]
