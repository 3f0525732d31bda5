"""SGI GRU driver plugin: one ``gru_mm_struct`` per mm through ``get_locked``/``put`` (Linux 5.4).

Models ``drivers/misc/sgi-gru`` after patch 04 of the get/put series: a GRU
thread state created with the mmap lock held for write takes its reference on
the mm's GMS with ``mmu_notifier_get_locked``; the last drop of a thread state
``put``s it; the GMS is allocated by ``alloc_notifier`` and freed by
``free_notifier`` after a grace period. There is no ``release`` callback:
teardown is driven by the puts alone. ``scheme = "legacy"`` loads the v5.3
driver instead (see :mod:`mmu_notifier_gru.legacy`).
"""

from __future__ import annotations

from typing import Any, cast

import mmu_notifier
from mmu_notifier import MM, MMUNotifier, hookimpl
from mmu_notifier_gru.config import GruConfig
from mmu_notifier_gru.device import GruMMStruct, GruState, GruThreadState
from mmu_notifier_gru.driver import GSEG_PAGESIZE, GruDriverBase

__all__ = [
    "GSEG_PAGESIZE",
    "GruConfig",
    "GruDriver",
    "GruDriverBase",
    "GruMMStruct",
    "GruState",
    "GruThreadState",
]


class GruDriver(GruDriverBase):
    """The v5.4 GRU driver: ``gru_mmuops`` is start, end, alloc_notifier and free_notifier.

    Constructing it with ``scheme = "legacy"`` gives the v5.3 build
    (:class:`mmu_notifier_gru.legacy.LegacyGruDriver`) instead: the two
    builds have different ops tables, as two versions of the module do.
    """

    version = "5.4"
    required_hooks = ("alloc_notifier", "free_notifier", "invalidate_range_start", "invalidate_range_end")

    def __new__(cls, config: GruConfig | None = None) -> Any:
        if cls is GruDriver and config is not None and config.scheme == "legacy":
            from mmu_notifier_gru.legacy import LegacyGruDriver

            return LegacyGruDriver(config)
        return super().__new__(cls)

    def gru_register_mmu_notifier(self, mm: MM) -> GruMMStruct:
        """``gru_register_mmu_notifier``: ``mmu_notifier_get_locked`` on ``mm`` (mmap lock held for write)."""
        return cast(GruMMStruct, mmu_notifier.get_locked(self, mm))

    def gru_drop_mmu_notifier(self, gms: GruMMStruct, mm: MM) -> None:
        """``gru_drop_mmu_notifier``: ``mmu_notifier_put``; the last one frees the GMS after a grace period."""
        mmu_notifier.put(gms)

    @hookimpl
    def alloc_notifier(self, mm: MM) -> MMUNotifier:
        """``gru_alloc_notifier``: a zeroed GMS (no ASIDs, nothing in flight)."""
        self._stat("gms_alloc")
        return GruMMStruct(len(self.gru_base))

    @hookimpl
    def free_notifier(self, subscription: MMUNotifier) -> None:
        """``gru_free_notifier``: the GMS is freed (the core poisons it). Atomic context: nothing sleeps."""
        self._stat("gms_free")
