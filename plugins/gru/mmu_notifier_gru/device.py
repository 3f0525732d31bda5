"""The GRU hardware and its per-mm bookkeeping: chiplets, ASIDs, TLBs, the GMS.

Models ``drivers/misc/sgi-gru``: ``grumain.c`` (ASID assignment, context
slots, ``gru_load_mm_tracker``/``gru_unload_mm_tracker``) and
``grutlbpurge.c`` (``gru_flush_tlb_range``, ``gru_flush_all_tlb``), plus the
two hardware behaviours the driver relies on:

* a TLB entry is tagged with an ASID; an instruction of a context hits only
  entries of the ASID that context was loaded with;
* "magic hardware" (the comment in ``gru_try_dropin``): a dropin is ignored
  if a TLB invalidate reached the chiplet between the read of the fault
  handle and the dropin. :attr:`GruTLB.invalidations` is that hardware
  sequence; a dropin carries the value it saw.

Lock order (as in the kernel): ``ms_asid_lock`` -> ``gs_asid_lock`` -> the
chiplet's TGH lock. ``gs_lock`` (context slots) is never held with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmu_notifier import MMUNotifier, sync
from mmu_notifier_gru.config import ASID_INC, GruConfig

if TYPE_CHECKING:
    from mmu_notifier import MM, VMA

#: ``GRUMAXINVAL``: pages one TGH invalidate covers; ``gru_flush_tlb_range`` issues one per chiplet.
GRUMAXINVAL = 1024


@dataclass(slots=True)
class TLBEntry:
    """One GRU TLB entry: a virtual page of one ASID translated to a frame."""

    pfn: int
    writable: bool


class GruTLB:
    """One chiplet's TLB: ``(asid, vpn) -> entry``, oldest evicted first when full.

    ``lock`` models the TLB global handle lock (``lock_tgh_handle``) and the
    hardware's own serialisation of lookups, dropins and invalidates:
    :meth:`dropin`, :meth:`invalidate`, :meth:`flush_all` and :meth:`of_asid`
    take it; a caller of :meth:`lookup` holds it for the instant of the read.
    """

    __slots__ = ("capacity", "lock", "entries", "invalidations")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.lock = sync.SpinLock("gru_tgh_lock")
        self.entries: dict[tuple[int, int], TLBEntry] = {}
        #: hardware invalidate sequence: bumped by every invalidate reaching this chiplet
        self.invalidations = 0

    def lookup(self, asid: int, vpn: int, write: bool) -> int | None:
        """The frame an instruction of ``asid`` reaches at ``vpn``: None on a miss or a write to a read-only entry.

        Caller holds ``lock``.
        """
        entry = self.entries.get((asid, vpn))
        if entry is None or (write and not entry.writable):
            return None
        return entry.pfn

    def dropin(self, asid: int, vpn: int, pfn: int, writable: bool, seen: int) -> bool:
        """``tfh_write_restart``: install the entry unless an invalidate came after ``seen``; True if installed."""
        with self.lock:
            if self.invalidations != seen:
                return False
            entries = self.entries
            entries.pop((asid, vpn), None)
            if len(entries) >= self.capacity:
                del entries[next(iter(entries))]
            entries[(asid, vpn)] = TLBEntry(pfn, writable)
            return True

    def invalidate(self, asid: int, first_vpn: int, pages: int) -> None:
        """``tgh_invalidate`` for one ASID: drop its entries for ``pages`` pages from ``first_vpn``."""
        with self.lock:
            self.invalidations += 1
            end = first_vpn + pages
            doomed = [key for key in self.entries if key[0] == asid and first_vpn <= key[1] < end]
            for key in doomed:
                del self.entries[key]

    def flush_all(self) -> None:
        """``gru_flush_all_tlb``: drop every entry of every ASID (done on ASID wrap)."""
        with self.lock:
            self.invalidations += 1
            self.entries.clear()

    def of_asid(self, asid: int) -> dict[int, int]:
        """``vpn -> pfn`` of every entry tagged ``asid``."""
        with self.lock:
            return {vpn: entry.pfn for (tag, vpn), entry in self.entries.items() if tag == asid}


class GruState:
    """One GRU chiplet (``struct gru_state``): context slots, ASID allocator, TLB.

    ``gs_lock`` guards the context slots ``gs_gts``; ``gs_asid_lock`` guards
    ``gs_asid``, ``gs_asid_limit`` and ``gs_asid_gen``.
    """

    def __init__(self, gid: int, config: GruConfig) -> None:
        self.gs_gid = gid
        self.gs_lock = sync.SpinLock("gs_lock")
        self.gs_asid_lock = sync.SpinLock("gs_asid_lock")
        self.asid_min = config.asid_min
        self.asid_max = config.asid_max
        #: last ASID handed out; the next is ``gs_asid + ASID_INC``
        self.gs_asid = config.asid_min - ASID_INC
        self.gs_asid_limit = config.asid_min
        #: bumped at every wrap; a tracker of an older generation must get a new ASID
        self.gs_asid_gen = 0
        #: the thread state loaded in each hardware context, or None
        self.gs_gts: list[GruThreadState | None] = [None] * config.contexts_per_chiplet
        self.tlb = GruTLB(config.tlb_entries)

    def __repr__(self) -> str:
        return f"<GruState gid={self.gs_gid} asid={self.gs_asid:#x} gen={self.gs_asid_gen}>"

    def free_contexts(self) -> int:
        """Context slots not in use (read without ``gs_lock``: a hint, rechecked under it)."""
        return sum(slot is None for slot in self.gs_gts)

    def assign_asid(self) -> int:
        """``gru_assign_asid``: the next ASID, skipping ones loaded contexts still use."""
        with self.gs_asid_lock:
            self.gs_asid += ASID_INC
            asid = self.gs_asid
            if asid >= self.gs_asid_limit:
                asid = self._reset_asid_limit(asid)
            return asid

    def _wrap_asid(self) -> int:
        """``gru_wrap_asid``: a new generation; the whole TLB is flushed so no old tag survives."""
        self.gs_asid_gen += 1
        self.tlb.flush_all()
        return self.asid_min

    def _reset_asid_limit(self, asid: int) -> int:
        """``gru_reset_asid_limit``: find the next block of ASIDs no loaded context uses.

        Caller holds ``gs_asid_lock``. Only loaded contexts are looked at; a
        tracker of an unloaded context is caught by the generation check at
        its next load instead.
        """
        limit = self.asid_max
        if asid >= limit:
            asid = self._wrap_asid()
        restart = True
        while restart:
            restart = False
            for gts in self.gs_gts:
                if gts is None:
                    continue
                assert gts.ts_gms is not None  # a loaded context belongs to a user thread state
                inuse = gts.ts_gms.ms_asids[self.gs_gid].mt_asid
                if inuse == asid:
                    asid += ASID_INC
                    if asid >= limit:
                        limit = self.asid_max
                        if asid >= self.asid_max:
                            asid = self._wrap_asid()
                        restart = True
                        break
                if asid < inuse < limit:
                    limit = inuse
        self.gs_asid_limit = limit
        self.gs_asid = asid
        return asid


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


class GruThreadState:
    """``struct gru_thread_state`` ("GTS"): one user thread's use of a GSEG.

    ``ts_refcnt`` counts the GSEG's list entry and a loaded context; the
    last drop drops the GMS reference. ``ts_ctxlock`` serialises loading,
    unloading and dropins of the context (and guards ``ts_tfh_user_polling``);
    ``ts_gru``/``ts_ctxnum`` name the hardware context while loaded and
    ``ts_asid`` the ASID it was loaded with.
    """

    NULLCTX = -1

    def __init__(self, mm: MM, vma: VMA | None, tsid: int, user_chiplet: int = -1) -> None:
        self.ts_refcnt = sync.Atomic("ts_refcnt", 1)
        self.ts_ctxlock = sync.Mutex("ts_ctxlock")
        self.ts_mm = mm
        self.ts_vma = vma
        self.ts_tsid = tsid
        #: the chiplet the user asked for (sco_blade_chiplet), or -1 for any
        self.ts_user_chiplet_id = user_chiplet
        self.ts_gms: GruMMStruct | None = None
        self.ts_gru: GruState | None = None
        self.ts_ctxnum = self.NULLCTX
        self.ts_asid = 0
        #: the fault handle was switched to user polling mode: the user library must call the OS
        self.ts_tfh_user_polling = False

    def __repr__(self) -> str:
        where = f"gru{self.ts_gru.gs_gid}/ctx{self.ts_ctxnum}" if self.ts_gru else "unloaded"
        return f"<GruThreadState mm={self.ts_mm.id} tsid={self.ts_tsid} {where} refcnt={self.ts_refcnt.value}>"


def gru_flush_tlb_range(gms: GruMMStruct, chiplets: list[GruState], start: int, length: int, page_shift: int) -> None:
    """``gru_flush_tlb_range``: make every chiplet forget ``[start, start+length)`` of this mm.

    On a chiplet where the mm has contexts loaded and an ASID, one TGH
    invalidate of at most ``GRUMAXINVAL`` pages from ``start`` (the driver's
    single invalidate covers no more). Elsewhere the ASID is dropped and its
    bit cleared, so the next load takes a fresh ASID and sees none of the old
    entries. Never sleeps: spinlocks only.
    """
    pages = min((length + (1 << page_shift) - 1) >> page_shift, GRUMAXINVAL)
    with gms.ms_asid_lock:
        for gid in gms.chiplets_in_asidmap():
            tracker = gms.ms_asids[gid]
            if tracker.mt_ctxbitmap and tracker.mt_asid:
                chiplets[gid].tlb.invalidate(tracker.mt_asid, start >> page_shift, pages)
            else:
                tracker.mt_asid = 0
                gms.ms_asidmap &= ~(1 << gid)


def gru_load_mm_tracker(gms: GruMMStruct, gru: GruState, ctxnum: int) -> int:
    """``gru_load_mm_tracker``: the ASID a context of this mm loads with on ``gru``.

    Reuses the mm's ASID there if it has one of the current generation, else
    assigns a new one; marks the context loaded and the chiplet in the map.
    """
    tracker = gms.ms_asids[gru.gs_gid]
    with gms.ms_asid_lock:
        if tracker.mt_asid == 0 or tracker.mt_asid_gen != gru.gs_asid_gen:
            tracker.mt_asid = gru.assign_asid()
            tracker.mt_asid_gen = gru.gs_asid_gen
        bit = 1 << ctxnum
        if tracker.mt_ctxbitmap & bit:
            raise AssertionError(f"context {ctxnum} of chiplet {gru.gs_gid} loaded twice (the kernel BUGs)")
        tracker.mt_ctxbitmap |= bit
        gms.ms_asidmap |= 1 << gru.gs_gid
        return tracker.mt_asid


def gru_unload_mm_tracker(gms: GruMMStruct, gru: GruState, ctxnum: int) -> None:
    """``gru_unload_mm_tracker``: the context is gone; the ASID stays for a later reload."""
    tracker = gms.ms_asids[gru.gs_gid]
    with gms.ms_asid_lock:
        bit = 1 << ctxnum
        if not tracker.mt_ctxbitmap & bit:
            raise AssertionError(f"context {ctxnum} of chiplet {gru.gs_gid} unloaded but not loaded (the kernel BUGs)")
        tracker.mt_ctxbitmap ^= bit


def live_asid(gms: GruMMStruct, gru: GruState) -> int:
    """The ASID whose entries belong to this mm on ``gru``, or 0.

    An ASID of an older generation is this mm's only while one of its
    contexts is still loaded with it; otherwise the allocator may have handed
    the same number to another mm after the wrap.
    """
    tracker = gms.ms_asids[gru.gs_gid]
    if tracker.mt_asid and (tracker.mt_asid_gen == gru.gs_asid_gen or tracker.mt_ctxbitmap):
        return tracker.mt_asid
    return 0
