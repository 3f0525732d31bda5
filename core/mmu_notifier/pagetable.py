"""Physical frames and the CPU page table of one address space.

Models the parts of ``mm/page_alloc.c`` and the page-table entry format that a
secondary MMU cares about: which frame a virtual page maps, and its present,
writable, young, dirty and soft-dirty bits.

Frames are reference counted (fork and KSM share them) and a freed frame goes to
the *front* of the free list, so the next allocation reuses it at once: a device
that kept a stale translation then maps somebody else's page, which is exactly
what the coherence checks look for.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmu_notifier.errors import MisuseError, NoMemoryError, ParameterError


class PhysicalMemory:
    """A small frame allocator with per-frame reference counts and contents."""

    def __init__(self, frames: int = 1 << 20) -> None:
        if frames <= 0:
            raise ParameterError(f"PhysicalMemory: frames must be positive, got {frames}")
        self.frames = frames
        self._free: list[int] = []
        self._next_unused = 0
        self.refcount: dict[int, int] = {}
        #: a token per frame standing for its contents (copied by COW and migration)
        self.content: dict[int, int] = {}
        self._content_seq = 0

    def alloc(self, content: int | None = None) -> int:
        """Allocate a frame with refcount 1; raises :class:`NoMemoryError` when none is left."""
        if self._free:
            pfn = self._free.pop()
        elif self._next_unused < self.frames:
            pfn = self._next_unused
            self._next_unused += 1
        else:
            raise NoMemoryError(f"out of physical frames ({self.frames} in use)")
        self.refcount[pfn] = 1
        if content is None:
            self._content_seq += 1
            content = self._content_seq
        self.content[pfn] = content
        return pfn

    def get(self, pfn: int) -> None:
        """Take another reference on ``pfn`` (``get_page``)."""
        self._check(pfn)
        self.refcount[pfn] += 1

    def put(self, pfn: int) -> None:
        """Drop a reference; the last one frees the frame for reuse (``put_page``)."""
        self._check(pfn)
        left = self.refcount[pfn] - 1
        if left:
            self.refcount[pfn] = left
            return
        del self.refcount[pfn]
        del self.content[pfn]
        self._free.append(pfn)

    def in_use(self) -> int:
        """How many frames are allocated."""
        return len(self.refcount)

    def _check(self, pfn: int) -> None:
        if pfn not in self.refcount:
            raise MisuseError(f"frame {pfn} is not allocated")


@dataclass(slots=True)
class PTE:
    """A present CPU page-table entry (``pte_t``)."""

    pfn: int
    writable: bool
    young: bool = True
    dirty: bool = False
    soft_dirty: bool = True

    def __repr__(self) -> str:
        bits = "".join(
            flag if on else "-"
            for flag, on in (("w", self.writable), ("y", self.young), ("d", self.dirty), ("s", self.soft_dirty))
        )
        return f"<PTE pfn={self.pfn} {bits}>"


class PageTable:
    """Virtual page number -> :class:`PTE` for one mm (absent pages have no entry)."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[int, PTE] = {}

    def lookup(self, vpn: int) -> PTE | None:
        """The entry mapping virtual page ``vpn``, if present."""
        return self.entries.get(vpn)

    def set(self, vpn: int, pte: PTE) -> None:
        """Install ``pte`` at ``vpn`` (``set_pte_at``)."""
        self.entries[vpn] = pte

    def clear(self, vpn: int) -> PTE | None:
        """Remove and return the entry at ``vpn`` (``ptep_get_and_clear``)."""
        return self.entries.pop(vpn, None)

    def in_range(self, first_vpn: int, end_vpn: int) -> list[int]:
        """Present virtual pages in ``[first_vpn, end_vpn)``, ascending."""
        if end_vpn - first_vpn <= len(self.entries):
            return [vpn for vpn in range(first_vpn, end_vpn) if vpn in self.entries]
        return sorted(vpn for vpn in self.entries if first_vpn <= vpn < end_vpn)

    def __len__(self) -> int:
        return len(self.entries)
