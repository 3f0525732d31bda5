"""SGI GRU driver plugin: one ``gru_mm_struct`` per mm through ``get_locked``/``put`` (Linux 5.4).

Models ``drivers/misc/sgi-gru`` after patch 04 of the get/put series: a GRU
thread state created with the mmap lock held for write takes its reference on
the mm's GMS with ``mmu_notifier_get_locked``; the last drop of a thread state
``put``s it; the GMS is allocated by ``alloc_notifier`` and freed by
``free_notifier`` after a grace period. There is no ``release`` callback:
teardown is driven by the puts alone. ``scheme = "5.3"`` models the driver
before the series instead (:mod:`mmu_notifier_gru.legacy`).

The package's modules: :mod:`~mmu_notifier_gru.config` (module parameters),
:mod:`~mmu_notifier_gru.gru_mm_struct` (the GMS and the v5.4 references),
:mod:`~mmu_notifier_gru.device` (chiplets, TLBs, thread states and the
driver paths), :mod:`~mmu_notifier_gru.legacy` (v5.3),
:mod:`~mmu_notifier_gru.scenarios` and :mod:`~mmu_notifier_gru.exerciser`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from mmu_notifier import MM, Kernel, MMUNotifier, Range, hookimpl
from mmu_notifier_gru.config import GruConfig
from mmu_notifier_gru.device import (
    GSEG_PAGESIZE,
    GruDriverBase,
    GruScheme,
    GruState,
    GruThreadState,
    gru_flush_tlb_range,
)
from mmu_notifier_gru.gru_mm_struct import GruMMStruct, GruScheme54
from mmu_notifier_gru.legacy import GruScheme53

if TYPE_CHECKING:
    from mmu_notifier.explore import Scenario
    from mmu_notifier_gru.exerciser import GruExerciser

__all__ = [
    "GSEG_PAGESIZE",
    "GruConfig",
    "GruDriver",
    "GruDriverBase",
    "GruMMStruct",
    "GruState",
    "GruThreadState",
]

#: The builds by ``config.scheme``: the kernel version that shipped each.
SCHEMES: dict[str, type[GruScheme]] = {"5.3": GruScheme53, "5.4": GruScheme54}
#: The members of ``gru_mmuops`` that only some builds fill.
SCHEME_OPS = frozenset({"alloc_notifier", "free_notifier", "release"})


class GruDriver(GruDriverBase):
    """The GRU module; ``gru_mmuops`` is the chosen build's table.

    The build is chosen here, once, from ``config.scheme``: v5.4's table is
    start, end, ``alloc_notifier`` and ``free_notifier``; v5.3's is start, end
    and ``release``. A callback of :data:`SCHEME_OPS` that the build does
    not fill is named by :meth:`null_callbacks`, so the core leaves it absent
    (``None``) from the ops table, as a NULL member of the build's
    ``struct mmu_notifier_ops``.
    """

    version = "5.4"
    required_hooks = ("invalidate_range_start", "invalidate_range_end")

    def __init__(self, config: GruConfig | None = None) -> None:
        super().__init__(config)
        self.scheme = SCHEMES[self.config.scheme]()
        # the module version is the build's ("5.3" or "5.4")
        self.version = self.scheme.version  # type: ignore[misc]

    def null_callbacks(self) -> frozenset[str]:
        """The callbacks of :data:`SCHEME_OPS` the chosen kernel leaves NULL in its ops."""
        return SCHEME_OPS - self.scheme.ops

    # -- gru_mmuops (grutlbpurge.c) -----------------------------------------
    @hookimpl
    def invalidate_range_start(self, subscription: MMUNotifier, range: Range) -> int:
        """``gru_invalidate_range_start``: count the range in flight, then flush it from every chiplet.

        Never sleeps and never refuses, whatever ``range.blockable`` says.
        """
        gms = cast(GruMMStruct, subscription)
        self._stat("mmu_invalidate_range")
        gms.ms_range_active.inc()
        gru_flush_tlb_range(gms, self.gru_base, range.start, range.end - range.start, range.mm.page_shift)
        return 0

    @hookimpl
    def invalidate_range_end(self, subscription: MMUNotifier, range: Range) -> None:
        """``gru_invalidate_range_end``: one range fewer in flight; wake every dropin waiting for zero."""
        gms = cast(GruMMStruct, subscription)
        gms.ms_range_active.dec()
        gms.ms_wait_queue.wake_up_all()

    @hookimpl
    def alloc_notifier(self, mm: MM) -> MMUNotifier:
        """``gru_alloc_notifier`` (5.4): a zeroed GMS (no ASIDs, nothing in flight)."""
        self._stat("gms_alloc")
        return GruMMStruct(len(self.gru_base))

    @hookimpl
    def free_notifier(self, subscription: MMUNotifier) -> None:
        """``gru_free_notifier`` (5.4): the GMS is freed (the core poisons it). Atomic context: nothing sleeps."""
        self._stat("gms_free")

    @hookimpl
    def release(self, subscription: MMUNotifier, mm: MM) -> None:
        """``gru_release`` (5.3): only remember that the mm is going away (unlocked store)."""
        cast(GruScheme53, self.scheme).release(subscription)

    # -- model plumbing ------------------------------------------------------
    @hookimpl
    def exerciser(self, kernel: Kernel) -> GruExerciser:
        """The conformance exerciser bound to ``kernel``."""
        from mmu_notifier_gru.exerciser import GruExerciser

        return GruExerciser(self, kernel)

    @hookimpl
    def explore_scenarios(self) -> list[Scenario]:
        """The gru scenarios: the v5.3 races and the same flows under v5.4, plus dropin vs invalidation."""
        from mmu_notifier_gru.scenarios import SCENARIOS

        return list(SCENARIOS)
