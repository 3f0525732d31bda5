"""``struct gru_mm_struct`` (the GMS): the per-mm object of the GRU driver, and how v5.4 references it.

Models the GMS of ``drivers/misc/sgi-gru/grutables.h`` and the v5.4
``gru_register_mmu_notifier``/``gru_drop_mmu_notifier`` of
``grutlbpurge.c`` after patch 04 of the get/put series: a thread state takes
its reference with ``mmu_notifier_get_locked`` (the mmap lock is held for
write) and drops it with ``mmu_notifier_put``; the core allocates the GMS
through ``alloc_notifier`` and frees it through ``free_notifier`` after an
SRCU grace period. The v5.3 scheme, with its own lookup and refcount, is
:mod:`mmu_notifier_gru.legacy`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, cast

import mmu_notifier
from mmu_notifier import MM, MMUNotifier, sync

if TYPE_CHECKING:
    from mmu_notifier_gru.device import GruDriverBase


@dataclass(slots=True)
class GruMMTracker:
    """``struct gru_mm_tracker``: one mm's ASID on one chiplet and its loaded contexts there."""

    mt_asid: int = 0
    mt_asid_gen: int = 0
    mt_ctxbitmap: int = 0


class GruMMStruct(MMUNotifier):
    """``struct gru_mm_struct`` ("GMS"), the per-mm object with the embedded notifier.

    Exactly one per mm, shared by every GRU thread state of that mm.
    ``ms_range_active`` counts invalidations between start and end; dropins
    refuse while it is non-zero and ``ms_wait_queue`` wakes call-OS waiters
    when an end brings it down. ``ms_asid_lock`` guards ``ms_asidmap`` (bit
    per chiplet where the mm has an ASID) and ``ms_asids``.
    """

    def __init__(self, chiplets: int) -> None:
        super().__init__()
        self.ms_asid_lock = sync.SpinLock("ms_asid_lock")
        self.ms_range_active = sync.Atomic("ms_range_active")
        self.ms_wait_queue = sync.WaitQueue("ms_wait_queue")
        self.ms_asidmap = 0
        self.ms_asids = [GruMMTracker() for _ in range(chiplets)]

    def chiplets_in_asidmap(self) -> Iterator[int]:
        """``for_each_gru_in_bitmap``: chiplets where this mm holds an ASID; caller holds ``ms_asid_lock``."""
        bitmap = self.ms_asidmap
        while bitmap:
            low = bitmap & -bitmap
            yield low.bit_length() - 1
            bitmap ^= low



class GruScheme54:
    """The v5.4 build (``scheme = "5.4"``): ``gru_mmuops`` is start, end, ``alloc_notifier`` and ``free_notifier``.

    No ``release``: teardown is driven by the puts alone.
    """

    version: ClassVar[str] = "5.4"
    #: the members of ``gru_mmuops`` this build fills
    ops: ClassVar[frozenset[str]] = frozenset(
        {"invalidate_range_start", "invalidate_range_end", "alloc_notifier", "free_notifier"}
    )

    def gru_register_mmu_notifier(self, driver: GruDriverBase, mm: MM) -> GruMMStruct:
        """``gru_register_mmu_notifier``: ``mmu_notifier_get_locked`` on ``mm`` (mmap lock held for write)."""
        return cast(GruMMStruct, mmu_notifier.get_locked(driver, mm))

    def gru_drop_mmu_notifier(self, driver: GruDriverBase, gms: GruMMStruct, mm: MM) -> None:
        """``gru_drop_mmu_notifier``: ``mmu_notifier_put``; the last one frees the GMS after a grace period."""
        mmu_notifier.put(gms)
