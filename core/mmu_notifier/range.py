"""The invalidation range and its event type (``struct mmu_notifier_range``).

Linux 5.4 knows five events; ``RELEASE`` arrived in 5.5 with interval
notifiers (used only for their teardown range) and ``MIGRATE`` later still, so
migration is announced as ``CLEAR``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmu_notifier.mm import MM, VMA


class Event(IntEnum):
    """``enum mmu_notifier_event`` of Linux 5.4, plus 5.5's ``RELEASE``."""

    #: munmap, mremap: the range is going away.
    UNMAP = 0
    #: PTEs cleared: madvise(DONTNEED), reclaim, migration, KSM, COW.
    CLEAR = 1
    #: a whole-VMA protection change (mprotect).
    PROTECTION_VMA = 2
    #: per-page write protection (fork's COW set-up of the parent).
    PROTECTION_PAGE = 3
    #: soft-dirty tracking was reset.
    SOFT_DIRTY = 4
    #: (5.5) the address space is going away: the interval notifiers' teardown range only.
    RELEASE = 5


#: ``MMU_NOTIFIER_RANGE_BLOCKABLE``: the only range flag.
RANGE_BLOCKABLE = 1


@dataclass(slots=True, eq=False)
class Range:
    """One announced invalidation: ``[start, end)`` of ``mm`` for ``event``.

    ``flags`` carries :data:`RANGE_BLOCKABLE`; the dispatchers set or clear it,
    whatever the caller passed, as the kernel's inline wrappers do.
    """

    mm: MM
    start: int
    end: int
    event: Event
    vma: VMA | None = None
    flags: int = 0

    @property
    def blockable(self) -> bool:
        """``mmu_notifier_range_blockable()``: callbacks may sleep."""
        return bool(self.flags & RANGE_BLOCKABLE)

    def overlaps(self, start: int, end: int) -> bool:
        """True when ``[start, end)`` intersects this range."""
        return start < self.end and self.start < end

    def update_to_read_only(self) -> bool:
        """``mmu_notifier_range_update_to_read_only()``: an mprotect that leaves the VMA readable."""
        return self.vma is not None and self.event is Event.PROTECTION_VMA and self.vma.readable

    def __repr__(self) -> str:
        mode = "blockable" if self.blockable else "non-blockable"
        return f"<Range {self.event.name} {self.start:#x}-{self.end:#x} {mode}>"
