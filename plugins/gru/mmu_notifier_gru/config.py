"""Module parameters of the GRU driver model, validated with pydantic.

The numbers a real GRU fixes in hardware (16 contexts per chiplet, ASIDs in
steps of 8 up to ``MAX_ASID``) are the upper bounds here; a test may ask for a
smaller machine (one chiplet, four TLB entries, a tiny ASID range) to reach
capacity eviction and ASID wrap quickly. ``scheme`` picks the driver build
by the kernel version that shipped it: ``"5.4"`` is the driver after patch 04
of the get/put series, ``"5.3"`` the one before, with its own lookup,
refcount and ``ms_released`` flag. The names of earlier releases
(``"getput"``, ``"legacy"``) are still accepted and mapped, as deprecated
aliases.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import field_validator, model_validator

from mmu_notifier.config import DriverConfig, kernel_version

#: ``GRU_NUM_CCH``: contexts per chiplet; the per-mm context bitmap (``mt_ctxbitmap``) has 16 bits.
MAX_CONTEXTS = 16
#: ``ASID_INC``: a context uses 8 consecutive ASIDs (one per address region), so ASIDs step by 8.
ASID_INC = 8
#: ``MIN_ASID``: ASID 0 means "no ASID assigned".
MIN_ASID = 8
#: ``MAX_ASID``: the largest ASID the hardware accepts.
MAX_ASID = 0xFFFFF0
#: The deprecated scheme names of earlier releases, and the kernel version each meant.
SCHEME_ALIASES = {"legacy": "5.3", "getput": "5.4"}

#: Chiplets the model supports (the per-mm ``ms_asidmap`` is modelled as one word per 64 chiplets; one suffices).
MAX_CHIPLETS = 64


class GruConfig(DriverConfig):
    """``[drivers.gru]``: the machine's GRU chiplets and the driver build."""

    #: ``"5.4"`` (mmu_notifier_get_locked/put) or ``"5.3"`` (own lookup and refcount)
    scheme: Annotated[Literal["5.3", "5.4"], kernel_version(SCHEME_ALIASES)] = "5.4"
    #: GRU chiplets in the machine
    chiplets: int = 2
    #: hardware contexts (CCHs) per chiplet
    contexts_per_chiplet: int = MAX_CONTEXTS
    #: TLB entries per chiplet; a full TLB evicts its oldest entry
    tlb_entries: int = 64
    #: first ASID handed out after a wrap (``MIN_ASID``)
    asid_min: int = MIN_ASID
    #: ASIDs are handed out below this value; reaching it wraps (``MAX_ASID``)
    asid_max: int = MAX_ASID
    #: how a device TLB miss reaches the driver: ``"interrupt"`` (gru_intr) or ``"call_os"`` (user call-OS ioctl)
    dropin_mode: Literal["interrupt", "call_os"] = "call_os"

    @field_validator("chiplets")
    @classmethod
    def _chiplets(cls, value: int) -> int:
        if not 1 <= value <= MAX_CHIPLETS:
            raise ValueError(f"chiplets must be between 1 and {MAX_CHIPLETS}; a machine needs at least one GRU")
        return value

    @field_validator("contexts_per_chiplet")
    @classmethod
    def _contexts(cls, value: int) -> int:
        if not 1 <= value <= MAX_CONTEXTS:
            raise ValueError(
                f"contexts_per_chiplet must be between 1 and {MAX_CONTEXTS}: "
                f"the per-chiplet context bitmap of a gru_mm_struct has {MAX_CONTEXTS} bits"
            )
        return value

    @field_validator("tlb_entries")
    @classmethod
    def _tlb_entries(cls, value: int) -> int:
        if value < 1:
            raise ValueError("tlb_entries must be at least 1: a dropin needs somewhere to go")
        return value

    @field_validator("asid_min", "asid_max")
    @classmethod
    def _asid(cls, value: int) -> int:
        if value < MIN_ASID or value > MAX_ASID or value % ASID_INC:
            raise ValueError(
                f"must be a multiple of {ASID_INC} between {MIN_ASID} and {MAX_ASID:#x}: "
                f"ASID 0 means 'none' and each context takes {ASID_INC} consecutive ASIDs"
            )
        return value

    @model_validator(mode="after")
    def _asid_range(self) -> GruConfig:
        available = (self.asid_max - self.asid_min) // ASID_INC
        if available <= self.contexts_per_chiplet:
            raise ValueError(
                f"the ASID range [{self.asid_min:#x}, {self.asid_max:#x}) holds {available} ASID(s); "
                f"it must hold more than contexts_per_chiplet ({self.contexts_per_chiplet}), "
                "or a chiplet whose every context is loaded could find no ASID to hand out"
            )
        return self

