"""Explorer tests: make the ``explorer`` fixture and ``explore`` marker available here.

(Once the package declares its ``pytest11`` entry point these imports are redundant but harmless.)
"""

from mmu_notifier.explore.pytest_plugin import explore_shard, explorer, pytest_configure

__all__ = ["explore_shard", "explorer", "pytest_configure"]
