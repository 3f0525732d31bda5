"""Xen gntdev for the mmu_notifier model: an example third-party driver plugin.

Installed, it is found through the ``mmu_notifier.drivers`` entry point
``gntdev`` and passes the conformance kit (``mmu-notifier conformance gntdev``).
The plugin guide (``docs/plugin-guide.md`` of the mmu-notifier repository)
walks through it.
"""

from mmu_notifier_gntdev.driver import GntdevConfig, GntdevDriver, GntdevMM, GntdevPriv, GrantMap
from mmu_notifier_gntdev.exerciser import GntdevExerciser

__version__ = GntdevDriver.version

__all__ = ["GntdevConfig", "GntdevDriver", "GntdevExerciser", "GntdevMM", "GntdevPriv", "GrantMap"]
