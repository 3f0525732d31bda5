"""Module parameters of the gntdev example (a frozen pydantic model).

``scheme`` picks the kernel: ``"5.4"`` (default: the get/put conversion, one
list notifier per mm) or ``"5.5"`` (one interval notifier per grant map, as
"xen/gntdev: use mmu_interval_notifier_insert" did)::

    [drivers.gntdev]
    scheme = "5.5"
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mmu_notifier.config import DriverConfig, kernel_version


class GntdevConfig(DriverConfig):
    """Module parameters of gntdev."""

    #: ``scheme = 5.5`` (TOML) arrives as a number: read as text
    scheme: Annotated[Literal["5.4", "5.5"], kernel_version()] = Field(
        default="5.4", description='"5.4" (get/put: one list notifier per mm) or "5.5" (an interval notifier per '
                                   'grant map)')

    limit: int = Field(
        default=65536,
        gt=0,
        description="most grant pages one IOCTL_GNTDEV_MAP_GRANT_REF may map (the module parameter 'limit')",
    )
