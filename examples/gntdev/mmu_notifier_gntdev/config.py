"""Module parameters of the gntdev example (a frozen pydantic model).

gntdev models one kernel (5.4 with the get/put conversion), so it has no
``scheme`` field; a plugin that models several kernel versions adds one whose
values are the versions ("5.3", "5.4", ...).
"""

from __future__ import annotations

from pydantic import Field

from mmu_notifier.config import DriverConfig


class GntdevConfig(DriverConfig):
    """Module parameters of gntdev."""

    limit: int = Field(
        default=65536,
        gt=0,
        description="most grant pages one IOCTL_GNTDEV_MAP_GRANT_REF may map (the module parameter 'limit')",
    )
