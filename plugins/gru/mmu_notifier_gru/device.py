"""The GRU device: chiplets, ASIDs, TLBs, thread states, and the driver paths that drive them.

Models ``drivers/misc/sgi-gru``: ``grumain.c`` (ASID assignment, context
slots, thread-state and context life cycle, ``gru_load_mm_tracker``/
``gru_unload_mm_tracker``), ``grutlbpurge.c`` (``gru_flush_tlb_range``,
``gru_flush_all_tlb``), ``grufile.c`` (mmap of ``/dev/gru``, module exit) and
``grufault.c`` (TLB-miss handling: ``gru_try_dropin``, the interrupt path
``gru_intr`` and the user call-OS path ``gru_user_dropin``), plus the two
hardware behaviours the driver relies on:

* a TLB entry is tagged with an ASID; an instruction of a context hits only
  entries of the ASID that context was loaded with;
* "magic hardware" (the comment in ``gru_try_dropin``): a dropin is ignored
  if a TLB invalidate reached the chiplet between the read of the fault
  handle and the dropin. :attr:`GruTLB.invalidations` is that hardware
  sequence; a dropin carries the value it saw.

:class:`GruDriverBase` holds the paths both driver builds share; what
differs per build is how a thread state gets and drops its reference on the
per-mm GMS, which it asks of the build's scheme object
(:class:`~mmu_notifier_gru.gru_mm_struct.GruScheme54`,
:class:`~mmu_notifier_gru.legacy.GruScheme53`).

Lock order, as in the kernel: ``mmap_lock`` -> ``ts_ctxlock`` ->
``ms_asid_lock`` -> ``gs_asid_lock`` -> the chiplet's TGH lock; ``gs_lock``
(context slots), ``vd_lock`` are leaves. Lifetime: a thread state holds one
GMS reference from creation to its last drop; a loaded context holds one
thread-state reference.
"""

from __future__ import annotations

import errno
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar, Protocol

import mmu_notifier
from mmu_notifier import MM, VMA, BadAddressError, InvalidArgumentError, sync
from mmu_notifier.exerciser import DEVICE_TRANSLATIONS
from mmu_notifier.log import LOG
from mmu_notifier_gru.config import ASID_INC, GruConfig
from mmu_notifier_gru.gru_mm_struct import GruMMStruct

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


#: ``GRU_GSEG_PAGESIZE``: each thread of a GSEG mapping owns one 256 KiB slice (its TSID).
GSEG_PAGESIZE = 256 * 1024

# gru_vtop results
VTOP_SUCCESS, VTOP_INVALID, VTOP_RETRY = 0, -1, -2


class GruVmaData:
    """``struct gru_vma_data``: a GSEG VMA's thread states; ``vd_lock`` guards the list."""

    def __init__(self, mm: MM) -> None:
        self.vd_lock = sync.SpinLock("vd_lock")
        self.vd_head: list[GruThreadState] = []
        #: the mm the GSEG is mapped in (the kernel's ``vma->vm_mm``)
        self.mm = mm

    def find(self, tsid: int) -> GruThreadState | None:
        """``gru_find_current_gts_nolock``; caller holds ``vd_lock``."""
        return next((gts for gts in self.vd_head if gts.ts_tsid == tsid), None)


class GruScheme(Protocol):
    """One build of the driver: its ops table and how a thread state references the per-mm GMS."""

    #: the module version of the build ("5.3", "5.4")
    version: ClassVar[str]
    #: the members of ``gru_mmuops`` the build fills
    ops: ClassVar[frozenset[str]]

    def gru_register_mmu_notifier(self, driver: GruDriverBase, mm: MM) -> GruMMStruct:
        """Take a reference on ``mm``'s GMS (creating it); the caller holds the mmap lock for write."""
        ...

    def gru_drop_mmu_notifier(self, driver: GruDriverBase, gms: GruMMStruct, mm: MM) -> None:
        """Drop a reference taken by :meth:`gru_register_mmu_notifier`."""
        ...


class GruDriverBase(mmu_notifier.Driver):
    """The GRU device and every path both driver builds share.

    ``gru_base`` is the machine's chiplets; ``vdata`` maps each GSEG VMA to
    its ``vm_private_data``; ``stats`` counts what the kernel's ``STAT()``
    counts (``gms_alloc``, ``gms_free``, ``tlb_dropin``, ...).
    """

    name = "gru"
    config_model = GruConfig
    capabilities = frozenset({DEVICE_TRANSLATIONS})
    config: GruConfig
    #: the build, chosen once from ``config.scheme`` by :class:`mmu_notifier_gru.GruDriver`
    scheme: GruScheme

    def __init__(self, config: GruConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.gru_base = [GruState(gid, cfg) for gid in range(cfg.chiplets)]
        self.vdata: dict[VMA, GruVmaData] = {}
        #: the GSEG VMAs of each mm (a model-side index, not in the kernel): the checks find an mm's
        #: thread states without visiting every GSEG of the machine, so a check costs O(that mm)
        self.vdata_of_mm: dict[MM, dict[VMA, GruVmaData]] = {}
        self.stats: Counter[str] = Counter()

    def _stat(self, what: str) -> None:
        self.stats[what] += 1

    # -- the GMS reference: differs per build -------------------------------
    def gru_register_mmu_notifier(self, mm: MM) -> GruMMStruct:
        """Take a reference on ``mm``'s GMS (creating it); the caller holds the mmap lock for write."""
        return self.scheme.gru_register_mmu_notifier(self, mm)

    def gru_drop_mmu_notifier(self, gms: GruMMStruct, mm: MM) -> None:
        """Drop a reference taken by :meth:`gru_register_mmu_notifier` (``mm`` is the kernel's ``current->mm``)."""
        self.scheme.gru_drop_mmu_notifier(self, gms, mm)

    # -- GSEG mappings and thread states (grufile.c, grumain.c) ------------
    def gru_file_mmap(self, mm: MM, threads: int = 1) -> VMA:
        """``gru_file_mmap``: map a GSEG of ``threads`` slices into ``mm``; returns its VMA."""
        addr = mm.mmap(threads * GSEG_PAGESIZE, shared=True)
        vma = mm.find_vma(addr)
        assert vma is not None
        self.vdata[vma] = self.vdata_of_mm.setdefault(mm, {})[vma] = GruVmaData(mm)
        return vma

    def gru_find_vma(self, mm: MM, vaddr: int) -> VMA | None:
        """``gru_find_vma``: the GSEG VMA containing ``vaddr``; caller holds the mmap lock."""
        vma = mm.find_vma(vaddr)
        return vma if vma is not None and vma in self.vdata else None

    @staticmethod
    def tsid(vma: VMA, vaddr: int) -> int:
        """``TSID(vaddr, vma)``: which thread's slice of the GSEG ``vaddr`` is in."""
        return (vaddr - vma.start) // GSEG_PAGESIZE

    def gru_alloc_gts(self, mm: MM, vma: VMA, tsid: int) -> GruThreadState:
        """``gru_alloc_gts``: a new thread state holding a GMS reference; caller holds the mmap lock for write."""
        gts = GruThreadState(mm, vma, tsid)
        self._stat("gts_alloc")
        try:
            gts.ts_gms = self.gru_register_mmu_notifier(mm)
        except Exception:
            self.gts_drop(gts)
            raise
        return gts

    def gru_alloc_thread_state(self, mm: MM, vma: VMA, tsid: int) -> GruThreadState:
        """``gru_alloc_thread_state``: allocate, then publish unless another thread won the race."""
        gts = self.gru_alloc_gts(mm, vma, tsid)
        vdata = self.vdata[vma]
        with vdata.vd_lock:
            existing = vdata.find(tsid)
            if existing is None:
                vdata.vd_head.append(gts)
            else:
                # Not the GMS's last reference: the winner holds one too.
                self.gts_drop(gts)
                self._stat("gts_double_allocate")
                gts = existing
        return gts

    def gts_drop(self, gts: GruThreadState) -> None:
        """``gts_drop``: the last reference to a thread state drops its GMS reference. Takes no lock."""
        if gts.ts_refcnt.dec() == 0:
            if gts.ts_gms is not None:
                self.gru_drop_mmu_notifier(gts.ts_gms, gts.ts_mm)
            self._stat("gts_free")

    def gru_find_lock_gts(self, mm: MM, vaddr: int) -> GruThreadState | None:
        """``gru_find_lock_gts``: the thread state of a GSEG address, with the mmap lock (read) and ctxlock held."""
        mm.mmap_lock.down_read()
        vma = self.gru_find_vma(mm, vaddr)
        gts = None
        if vma is not None:
            vdata = self.vdata[vma]
            with vdata.vd_lock:
                gts = vdata.find(self.tsid(vma, vaddr))
        if gts is None:
            mm.mmap_lock.up_read()
            return None
        gts.ts_ctxlock.lock()
        return gts

    def gru_alloc_locked_gts(self, mm: MM, vaddr: int) -> GruThreadState:
        """``gru_alloc_locked_gts``: create the thread state with the mmap lock held for write (the GMS get).

        Returns it locked as :meth:`gru_find_lock_gts` does: the write lock is
        downgraded to read once the thread state's ctxlock is held.
        """
        mm.mmap_lock.down_write()
        try:
            vma = self.gru_find_vma(mm, vaddr)
            if vma is None:
                raise InvalidArgumentError(f"{vaddr:#x} is not in a GSEG of mm {mm.id}")
            gts = self.gru_alloc_thread_state(mm, vma, self.tsid(vma, vaddr))
        except Exception:
            mm.mmap_lock.up_write()
            raise
        gts.ts_ctxlock.lock()
        mm.mmap_lock.downgrade_write()
        return gts

    @staticmethod
    def gru_unlock_gts(gts: GruThreadState) -> None:
        """``gru_unlock_gts``: release what :meth:`gru_find_lock_gts` took."""
        gts.ts_ctxlock.unlock()
        gts.ts_mm.mmap_lock.up_read()

    def gru_set_context_option(self, mm: MM, gseg_vaddr: int, chiplet: int = -1) -> GruThreadState:
        """The set-context-option ioctl (``sco_blade_chiplet``): find or create this thread's state.

        The user path that creates a thread state, and with it takes the GMS
        reference. ``chiplet`` (-1: any) is where its context will be loaded.
        """
        if not -1 <= chiplet < len(self.gru_base):
            raise InvalidArgumentError(f"chiplet {chiplet} does not exist ({len(self.gru_base)} chiplets)")
        gts = self.gru_find_lock_gts(mm, gseg_vaddr) or self.gru_alloc_locked_gts(mm, gseg_vaddr)
        gts.ts_user_chiplet_id = chiplet
        self.gru_unlock_gts(gts)
        return gts

    def gru_vma_close(self, vma: VMA) -> None:
        """``gru_vma_close``: the GSEG is gone: unload every thread's context and drop its thread state.

        In the kernel this runs from munmap (mmap lock held for write) or
        from exit_mmap; like the kernel's, it takes no mmap lock itself.
        """
        vdata = self.vdata.pop(vma, None)
        if vdata is None:
            return
        of_mm = self.vdata_of_mm[vdata.mm]
        del of_mm[vma]
        if not of_mm:
            del self.vdata_of_mm[vdata.mm]
        while True:
            with vdata.vd_lock:
                if not vdata.vd_head:
                    return
                gts = vdata.vd_head.pop()
            with gts.ts_ctxlock:
                if gts.ts_gru is not None:
                    self.gru_unload_context(gts)
            self.gts_drop(gts)

    # -- hardware contexts (grumain.c) -------------------------------------
    def gru_assign_gru_context(self, gts: GruThreadState) -> bool:
        """``gru_assign_gru_context``: take a free context slot; the loaded context holds a thread-state reference.

        Tries the chiplet the user chose, else the one with the most free
        contexts first. Caller holds ``ts_ctxlock``. False if every slot is taken.
        """
        if gts.ts_user_chiplet_id >= 0:
            candidates = [self.gru_base[gts.ts_user_chiplet_id]]
        else:
            candidates = sorted(self.gru_base, key=lambda gru: -gru.free_contexts())
        for gru in candidates:
            with gru.gs_lock:
                for ctxnum, slot in enumerate(gru.gs_gts):
                    if slot is None:
                        gru.gs_gts[ctxnum] = gts
                        gts.ts_gru, gts.ts_ctxnum = gru, ctxnum
                        gts.ts_refcnt.inc()
                        return True
        return False

    def gru_load_context(self, gts: GruThreadState) -> None:
        """``gru_load_context``: the context starts with this mm's ASID on its chiplet. Caller holds ``ts_ctxlock``."""
        assert gts.ts_gms is not None and gts.ts_gru is not None
        gts.ts_asid = gru_load_mm_tracker(gts.ts_gms, gts.ts_gru, gts.ts_ctxnum)
        self._stat("load_context")

    def gru_unload_context(self, gts: GruThreadState) -> None:
        """``gru_unload_context``: stop the context, free its slot, drop its thread-state reference.

        Caller holds ``ts_ctxlock``. The mm keeps its ASID on the chiplet, so
        a reload before any invalidation finds its TLB entries again.
        """
        gru = gts.ts_gru
        assert gts.ts_gms is not None and gru is not None
        gru_unload_mm_tracker(gts.ts_gms, gru, gts.ts_ctxnum)
        with gru.gs_lock:
            gru.gs_gts[gts.ts_ctxnum] = None
            gts.ts_gru, gts.ts_ctxnum, gts.ts_asid = None, GruThreadState.NULLCTX, 0
        self._stat("unload_context")
        self.gts_drop(gts)

    def gru_fault(self, gts: GruThreadState) -> bool:
        """``gru_fault``: the thread touched its GSEG slice: load its context if needed. False if none is free.

        Raises :class:`BadAddressError` (SIGBUS) once the thread state's GSEG was closed.
        """
        locked = self.gru_find_lock_gts(gts.ts_mm, self.cb_address(gts))
        if locked is not gts:
            if locked is not None:
                self.gru_unlock_gts(locked)
            raise BadAddressError(f"the GSEG of {gts!r} is closed")
        try:
            if gts.ts_gru is None:
                if not self.gru_assign_gru_context(gts):
                    return False
                self.gru_load_context(gts)
            return True
        finally:
            self.gru_unlock_gts(gts)

    def gru_user_unload_context(self, gts: GruThreadState) -> None:
        """The unload-context ioctl: save and unload this thread's context (its ASID stays on the chiplet)."""
        assert gts.ts_vma is not None
        locked = self.gru_find_lock_gts(gts.ts_mm, self.cb_address(gts))
        if locked is None:
            return
        if locked.ts_gru is not None:
            self.gru_unload_context(locked)
        self.gru_unlock_gts(locked)

    @staticmethod
    def cb_address(gts: GruThreadState) -> int:
        """A control-block address in the thread's GSEG slice (what the user passes to the ioctls)."""
        assert gts.ts_vma is not None
        return gts.ts_vma.start + gts.ts_tsid * GSEG_PAGESIZE

    # -- TLB misses (grufault.c) ---------------------------------------------
    def gru_vtop(self, gts: GruThreadState, vaddr: int, write: bool, atomic: bool) -> tuple[int, int]:
        """``gru_vtop``: ``(VTOP_*, pfn)`` for ``vaddr`` from the CPU page table.

        The atomic lookup reads the PTE (taken for the instant of the read,
        so the explorer sees the access); a missing or not-yet-writable entry
        is VTOP_RETRY in interrupt context and a ``get_user_pages`` fault
        otherwise. A GSEG address or a hole is VTOP_INVALID.
        """
        mm = gts.ts_mm
        vma = mm.find_vma(vaddr)
        if vma is None or vma in self.vdata:
            return VTOP_INVALID, 0
        vpn = vaddr >> mm.page_shift
        with mm.page_table_lock:
            pte = mm.page_table.lookup(vpn)
            usable = pte is not None and (not write or (pte.writable and pte.dirty))
            pfn = pte.pfn if pte is not None else 0
        if usable:
            return VTOP_SUCCESS, pfn
        if atomic:
            return VTOP_RETRY, 0
        try:
            return VTOP_SUCCESS, mm.handle_mm_fault(vaddr, write)
        except BadAddressError:
            return VTOP_INVALID, 0

    def gru_try_dropin(self, gts: GruThreadState, vaddr: int, write: bool, atomic: bool) -> int:
        """``gru_try_dropin``: 0 (dropped in, or ignored by the hardware), 1 (retry), or ``-errno``.

        Never installs while ``ms_range_active`` is non-zero. The hardware
        sequence is read with the fault handle, before the counter, so an
        invalidate between the check and the dropin makes the hardware
        ignore the dropin. Caller holds the mmap lock (read) and owns the
        context (ctxlock, or the hardware's pin of a faulting context).
        """
        gru, gms = gts.ts_gru, gts.ts_gms
        if gru is None or gts.ts_asid == 0 or gms is None:
            self._stat("tlb_dropin_fail_no_asid")
            return -errno.EAGAIN
        with gru.tlb.lock:
            seen = gru.tlb.invalidations
        if gms.ms_range_active.read():
            self._stat("tlb_dropin_fail_range_active")
            return 1
        status, pfn = self.gru_vtop(gts, vaddr, write, atomic)
        if status == VTOP_INVALID:
            self._stat("tlb_dropin_fail_invalid")
            return -errno.EFAULT
        if status == VTOP_RETRY:
            self._stat("tlb_dropin_fail_upm")
            return 1
        if gru.tlb.dropin(gts.ts_asid, vaddr >> gts.ts_mm.page_shift, pfn, write, seen):
            self._stat("tlb_dropin")
        else:
            self._stat("tlb_dropin_ignored")
        if LOG.on:
            LOG.event("gru.dropin", mm=gts.ts_mm.id, gid=gru.gs_gid, vaddr=vaddr, pfn=pfn, atomic=atomic)
        return 0

    def gru_intr(self, gts: GruThreadState, vaddr: int, write: bool) -> None:
        """``gru_intr`` for one faulting context: in interrupt context, trylock the mmap lock and try a dropin.

        Whatever fails switches the fault handle to user polling mode: the
        instruction reports "retry" and the user library handles the miss
        through the call-OS path. Caller owns the context (ctxlock).
        """
        mm = gts.ts_mm
        with sync.atomic_context():
            if not mm.mmap_lock.down_read_trylock():
                self._stat("intr_mm_lock_failed")
                gts.ts_tfh_user_polling = True
                return
            try:
                if self.gru_try_dropin(gts, vaddr, write, atomic=True):
                    gts.ts_tfh_user_polling = True
            finally:
                mm.mmap_lock.up_read()

    def gru_user_dropin(self, gts: GruThreadState, vaddr: int, write: bool) -> int:
        """``gru_user_dropin``: wait until no range is in flight, try the dropin, repeat while it says retry."""
        gms = gts.ts_gms
        assert gms is not None
        while True:
            gms.ms_wait_queue.wait_event(lambda: gms.ms_range_active.value == 0)
            ret = self.gru_try_dropin(gts, vaddr, write, atomic=False)
            if ret <= 0:
                return ret
            self._stat("call_os_wait_queue")

    def gru_handle_user_call_os(self, gts: GruThreadState, vaddr: int, write: bool) -> int:
        """``gru_handle_user_call_os``: the user saw "call OS" on a control block: handle its TLB miss."""
        locked = self.gru_find_lock_gts(gts.ts_mm, self.cb_address(gts))
        if locked is None:
            return -errno.EINVAL
        try:
            if locked.ts_gru is None:
                return -errno.EAGAIN
            return self.gru_user_dropin(locked, vaddr, write)
        finally:
            self.gru_unlock_gts(locked)

    def _execute(self, gts: GruThreadState, vpn: int, write: bool) -> tuple[GruState | None, int | None]:
        """The hardware runs one instruction of the context: ``(chiplet, None if unloaded; frame, None on a miss)``."""
        with gts.ts_ctxlock:
            gru = gts.ts_gru
            if gru is None:
                return None, None
            with gru.tlb.lock:
                return gru, gru.tlb.lookup(gts.ts_asid, vpn, write)

    def gru_instruction(self, gts: GruThreadState, vaddr: int, write: bool = False) -> int | None:
        """A GRU instruction of ``gts`` references ``vaddr``: the frame it reaches, or None (retry later).

        Loads the context first (``gru_fault``); None if no context is free.
        A TLB miss goes to the driver as configured. ``interrupt``:
        ``gru_intr`` and one re-execution; None if the dropin could not be
        done now (the fault handle is then in user polling mode, so the
        retried instruction's miss takes the call-OS path). ``call_os``: the
        OS waits out invalidations and drops in, until the instruction hits.
        :class:`BadAddressError` where the hardware raises an exception (no
        usable mapping, or the GSEG is closed).
        """
        vpn = vaddr >> gts.ts_mm.page_shift
        interrupt = self.config.dropin_mode == "interrupt"
        while True:
            gru, pfn = self._execute(gts, vpn, write)
            if pfn is not None:
                return pfn
            if gru is None:
                if not self.gru_fault(gts):
                    return None
                continue
            if interrupt:
                with gts.ts_ctxlock:  # the pending fault pins the context until the handler restarts it
                    polling, gts.ts_tfh_user_polling = gts.ts_tfh_user_polling, False
                    if not polling and gts.ts_gru is gru:
                        self.gru_intr(gts, vaddr, write)
                if not polling:
                    return self._execute(gts, vpn, write)[1]
            ret = self.gru_handle_user_call_os(gts, vaddr, write)
            if ret == -errno.EFAULT:
                raise BadAddressError(f"GRU access at {vaddr:#x} of mm {gts.ts_mm.id}: no usable mapping")
            if ret == -errno.EINVAL:
                raise BadAddressError(f"the GSEG of {gts!r} is closed")

    # -- what the device holds -----------------------------------------------
    def thread_states(self, mm: MM) -> list[GruThreadState]:
        """Every live thread state of ``mm``."""
        found: list[GruThreadState] = []
        for vdata in list(self.vdata_of_mm.get(mm, {}).values()):
            with vdata.vd_lock:
                found += [gts for gts in vdata.vd_head if gts.ts_mm is mm]
        return found

    def device_translations(self, mm: MM) -> dict[int, int]:
        """``vpn -> pfn`` of every TLB entry an instruction of ``mm`` can still hit.

        Those are the entries tagged with the mm's live ASID on each chiplet
        and with the ASID of each of its loaded contexts; entries of a dropped
        ASID are unreachable and not counted.
        """
        states = self.thread_states(mm)
        if not states:
            return {}
        gms = states[0].ts_gms
        assert gms is not None
        found: dict[int, int] = {}
        for gru in self.gru_base:
            with gms.ms_asid_lock:
                asids = {live_asid(gms, gru)}
            with gru.gs_lock:
                asids |= {gts.ts_asid for gts in gru.gs_gts if gts is not None and gts.ts_mm is mm}
            for asid in asids - {0}:
                found.update(gru.tlb.of_asid(asid))
        return found

    # -- module --------------------------------------------------------------
    def gru_exit(self, kernel: mmu_notifier.Kernel) -> None:
        """``gru_exit`` (module unload): close every GSEG still open, then ``mmu_notifier_synchronize``.

        The synchronize is the v5.4 addition: no ``free_notifier`` of this
        driver may run after the module is gone.
        """
        for vma in list(self.vdata):
            self.gru_vma_close(vma)
        mmu_notifier.synchronize(kernel)
