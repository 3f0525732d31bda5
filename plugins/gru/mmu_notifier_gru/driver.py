"""The GRU driver's paths shared by both builds: GSEGs, thread states, contexts, dropins.

Models ``grufile.c`` (mmap of ``/dev/gru``, module exit), ``grumain.c``
(thread-state and context life cycle) and ``grufault.c`` (TLB-miss handling:
``gru_try_dropin``, the interrupt path ``gru_intr`` and the user call-OS path
``gru_user_dropin``), and the two notifier callbacks both builds share
(``invalidate_range_start``/``end``). The build-specific part is how a thread
state gets and drops its reference on the per-mm GMS:
:meth:`GruDriverBase.gru_register_mmu_notifier` and
:meth:`GruDriverBase.gru_drop_mmu_notifier`.

Lock order, as in the kernel: ``mmap_lock`` -> ``ts_ctxlock`` -> the
spinlocks of :mod:`mmu_notifier_gru.device`; ``vd_lock`` and ``gs_lock`` are
leaves. Lifetime: a thread state holds one GMS reference from creation to its
last drop; a loaded context holds one thread-state reference.
"""

from __future__ import annotations

import errno
from collections import Counter
from typing import TYPE_CHECKING, Any, cast

import mmu_notifier
from mmu_notifier import MM, VMA, BadAddressError, InvalidArgumentError, MMUNotifier, Range, hookimpl, sync
from mmu_notifier.exerciser import DEVICE_TRANSLATIONS
from mmu_notifier.log import LOG
from mmu_notifier_gru.config import GruConfig
from mmu_notifier_gru.device import (
    GruMMStruct,
    GruState,
    GruThreadState,
    gru_flush_tlb_range,
    gru_load_mm_tracker,
    gru_unload_mm_tracker,
    live_asid,
)

if TYPE_CHECKING:
    from mmu_notifier_gru.exerciser import GruExerciser

#: ``GRU_GSEG_PAGESIZE``: each thread of a GSEG mapping owns one 256 KiB slice (its TSID).
GSEG_PAGESIZE = 256 * 1024

# gru_vtop results
VTOP_SUCCESS, VTOP_INVALID, VTOP_RETRY = 0, -1, -2


class GruVmaData:
    """``struct gru_vma_data``: a GSEG VMA's thread states; ``vd_lock`` guards the list."""

    def __init__(self) -> None:
        self.vd_lock = sync.SpinLock("vd_lock")
        self.vd_head: list[GruThreadState] = []

    def find(self, tsid: int) -> GruThreadState | None:
        """``gru_find_current_gts_nolock``; caller holds ``vd_lock``."""
        return next((gts for gts in self.vd_head if gts.ts_tsid == tsid), None)


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

    def __init__(self, config: GruConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.gru_base = [GruState(gid, cfg) for gid in range(cfg.chiplets)]
        self.vdata: dict[VMA, GruVmaData] = {}
        self.stats: Counter[str] = Counter()

    def _stat(self, what: str) -> None:
        self.stats[what] += 1

    # -- the GMS reference: differs per build -------------------------------
    def gru_register_mmu_notifier(self, mm: MM) -> GruMMStruct:
        """Take a reference on ``mm``'s GMS (creating it); the caller holds the mmap lock for write."""
        raise NotImplementedError

    def gru_drop_mmu_notifier(self, gms: GruMMStruct, mm: MM) -> None:
        """Drop a reference taken by :meth:`gru_register_mmu_notifier` (``mm`` is the kernel's ``current->mm``)."""
        raise NotImplementedError

    # -- notifier callbacks (grutlbpurge.c) ---------------------------------
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

    # -- GSEG mappings and thread states (grufile.c, grumain.c) ------------
    def gru_file_mmap(self, mm: MM, threads: int = 1) -> VMA:
        """``gru_file_mmap``: map a GSEG of ``threads`` slices into ``mm``; returns its VMA."""
        addr = mm.mmap(threads * GSEG_PAGESIZE, shared=True)
        vma = mm.find_vma(addr)
        assert vma is not None
        self.vdata[vma] = GruVmaData()
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
        for vdata in list(self.vdata.values()):
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

    @hookimpl
    def exerciser(self, kernel: Any) -> GruExerciser:
        """The conformance exerciser bound to ``kernel``."""
        from mmu_notifier_gru.exerciser import GruExerciser

        return GruExerciser(self, kernel)

    @hookimpl
    def explore_scenarios(self) -> list[Any]:
        """The gru scenarios: the v5.3 races and the same flows under v5.4, plus dropin vs invalidation."""
        from mmu_notifier_gru.scenarios import SCENARIOS

        return list(SCENARIOS)
