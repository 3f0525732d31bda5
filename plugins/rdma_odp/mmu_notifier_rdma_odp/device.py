"""The model device: an mlx5-like HCA with ODP memory regions (``drivers/infiniband/hw/mlx5/odp.c``, 5.4).

* :class:`IbUcontext` is one open verbs context of a process on a device
  (``ib_uverbs_open`` + ``alloc_ucontext``); MRs are registered through it
  (``ibv_reg_mr`` with ``IBV_ACCESS_ON_DEMAND``), explicit over a range or
  implicit over the whole address space.
* :class:`Mlx5Mr` is a memory region. Its ``mtt`` are the hardware
  translation entries (MTTs), kept apart from the umem's DMA list: a page
  can be DMA-mapped and not (yet) in the MTTs, never the other way round
  while an invalidation is not in flight. An implicit parent's ``ksm`` is
  its indirect table of children, one per chunk.
* :meth:`Mlx5Device.page_fault` is ``pagefault_mr`` for one page: sample
  ``notifiers_seq``, map the page into the DMA list, write the MTT only if
  the retry test is still false under ``umem_mutex``; otherwise wait on the
  completion (timeout ``fault_timeout_ms``, a WARN when it expires) and
  return ``-EAGAIN`` (raise :class:`~mmu_notifier.TryAgainError`): the HCA
  faults again, the handler does not loop.
* :meth:`Mlx5Device.invalidate_range` is ``mlx5_ib_invalidate_range``: zap
  the MTTs of the mapped pages and unmap them, all under ``umem_mutex``; an
  implicit child left empty is marked dying and its free is queued.

Deliberate differences: one page per fault; no protection domains or QPs;
the device's ``mr_srcu`` is an SRCU domain of its own, as in the kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmu_notifier import (
    MM,
    BadAddressError,
    InvalidArgumentError,
    NoMemoryError,
    Range,
    TryAgainError,
    interval_set_seq,
    sync,
)
from mmu_notifier.log import LOG
from mmu_notifier.mm import TASK_SIZE
from mmu_notifier.srcu import Srcu
from mmu_notifier.workqueue import Work, schedule_work
from mmu_notifier_rdma_odp.umem_odp import (
    EAGAIN,
    ODP_ACCESS_MASK,
    ODP_WRITE_ALLOWED_BIT,
    IbUmemOdp,
    Pid,
    alloc_child,
    fault_seq,
    ib_init_umem_odp,
    ib_umem_odp_release,
    map_dma_pages,
    mmu_notifier_retry,
    unmap_dma_pages,
)

if TYPE_CHECKING:
    from mmu_notifier_rdma_odp import RdmaOdpDriver


class Mlx5Mr:
    """``struct mlx5_ib_mr`` of an ODP MR: its umem, its MTTs and, for an implicit parent, its children."""

    def __init__(self, device: Mlx5Device, umem: IbUmemOdp, parent: Mlx5Mr | None = None) -> None:
        self.device = device
        self.umem = umem
        #: page index -> (frame, writable): the hardware translation entries
        self.mtt: dict[int, tuple[int, bool]] = {}
        #: implicit child: its parent (cleared by the leaf free)
        self.parent = parent
        #: the mkey is valid: the HCA may use the MR (``mr->live``)
        self.live = False
        #: implicit parent: chunk index -> child (the KSM table)
        self.ksm: dict[int, Mlx5Mr] = {}
        #: implicit parent: leaf frees queued and not finished (``num_leaf_free``)
        self.num_leaf_free = 0
        self.q_leaf_free = sync.WaitQueue("mlx5_ib_mr.q_leaf_free")

    @property
    def implicit(self) -> bool:
        """An implicit parent (covers the whole address space, has children)."""
        return self.umem.is_implicit_odp

    def __repr__(self) -> str:
        kind = "implicit" if self.implicit else ("child" if self.parent else "mr")
        return f"<Mlx5Mr {kind} {self.device.name} mtt={len(self.mtt)} live={self.live}>"


class Mlx5Device:
    """An mlx5-like HCA (``struct mlx5_ib_dev``): MTT capacity, ``mr_srcu``, the fault and invalidate ops."""

    def __init__(self, driver: RdmaOdpDriver, name: str) -> None:
        self.driver = driver
        self.name = name
        self.mr_srcu = Srcu(f"{name}.mr_srcu")
        #: every registered MR, oldest first (a dict: a deregistration is O(1) at any scale)
        self.mrs: dict[Mlx5Mr, None] = {}
        #: the registered MRs of each mm (a model-side index, not in the kernel): :meth:`translations`
        #: of one mm costs O(that mm's MRs), not O(every MR of the device)
        self.mrs_of_mm: dict[MM, dict[Mlx5Mr, None]] = {}
        self.mtt_used = 0

    def __repr__(self) -> str:
        return f"<Mlx5Device {self.name} mrs={len(self.mrs)} mtt={self.mtt_used}>"

    # -- the fault path --------------------------------------------------------------
    def page_fault(self, mr: Mlx5Mr, address: int, write: bool = False) -> int:
        """``pagefault_mr`` for the page at ``address``: returns the frame now in the MTT.

        Raises :class:`TryAgainError` after waiting on the umem's completion
        when an invalidation raced (the HCA faults again later),
        :class:`InvalidArgumentError` when the owner exited, and
        :class:`BadAddressError` for an invalid mkey or an address the CPU
        cannot fault in.
        """
        index = self.mr_srcu.read_lock()
        try:
            if not mr.live:
                raise BadAddressError(f"{mr!r}: the mkey is not valid")
            if address < mr.umem.start or address > mr.umem.last:
                raise BadAddressError(f"{mr!r}: address {address:#x} outside the MR")
            target = self.implicit_mr_get_data(mr, address) if mr.implicit else mr
            odp = target.umem
            page_size = odp.owning_mm.page_size
            page = address & ~(page_size - 1)
            current_seq = fault_seq(odp)
            ret = map_dma_pages(odp, page, page_size, write, current_seq)
            if ret >= 0:
                with odp.umem_mutex:
                    if not mmu_notifier_retry(odp, current_seq):
                        return self.update_xlt(target, odp.index(page))
                ret = EAGAIN
            if odp.notifier is not None:  # 5.5: no completion; the next read_begin waits for the invalidation
                raise TryAgainError(f"{self.name}: page fault at {address:#x} raced an invalidation (EAGAIN)")
            timeout = self.driver.config.fault_timeout_ms / 1000
            if not odp.notifier_completion.wait(timeout):
                odp.owning_mm.kernel.warn(f"{self.name}: timeout waiting for mmu notifier completion on {odp!r}")
            if LOG.on:
                LOG.event("rdma_odp.fault_retry", device=self.name, address=address)
            raise TryAgainError(f"{self.name}: page fault at {address:#x} raced an invalidation (EAGAIN)")
        finally:
            self.mr_srcu.read_unlock(index)

    def update_xlt(self, mr: Mlx5Mr, index: int) -> int:
        """``mlx5_ib_update_xlt``: write the MTT of page ``index`` from the DMA list; caller holds ``umem_mutex``."""
        dma = mr.umem.dma_list[index]
        if index not in mr.mtt:
            if self.mtt_used >= self.driver.config.mtt_capacity:
                raise NoMemoryError(f"{self.name}: all {self.driver.config.mtt_capacity} MTT entries in use")
            self.mtt_used += 1
        mr.mtt[index] = (dma >> 2, bool(dma & ODP_WRITE_ALLOWED_BIT))
        return dma >> 2

    def implicit_mr_get_data(self, imr: Mlx5Mr, address: int) -> Mlx5Mr:
        """``implicit_mr_get_data``: the child of ``imr`` covering ``address``, created under the parent's mutex."""
        driver = self.driver
        chunk_size = driver.config.implicit_chunk_size
        chunk = address - address % chunk_size
        parent = imr.umem
        with parent.umem_mutex:
            child = self.odp_lookup(imr, chunk)
            if child is not None:
                return child
            size = min(chunk_size, parent.end - chunk)
            child_umem = alloc_child(driver, driver.scheme, parent, chunk, size, parent.context)
            child = Mlx5Mr(self, child_umem, parent=imr)
            child_umem.private = child
            child_umem.work = Work(lambda: self.mr_leaf_free_action(child_umem), name="mr_leaf_free_action")
            child.live = True
            imr.ksm[chunk // chunk_size] = child
            driver.stats["child_alloc"] += 1
            if LOG.on:
                LOG.event("rdma_odp.child", device=self.name, start=chunk, size=size)
            return child

    def odp_lookup(self, imr: Mlx5Mr, chunk: int) -> Mlx5Mr | None:
        """``odp_lookup``: a live (not dying) child of ``imr`` at ``chunk``, found in the per_mm tree."""
        per_mm = imr.umem.per_mm
        assert per_mm is not None
        per_mm.umem_rwsem.down_read()
        try:
            for umem in per_mm.umem_tree.iter_overlap(chunk, chunk):
                mr = umem.private
                if mr is not None and mr.parent is imr and not umem.dying:
                    found: Mlx5Mr = mr
                    return found
            return None
        finally:
            per_mm.umem_rwsem.up_read()

    # -- invalidation ------------------------------------------------------------------
    def invalidate_range(self, umem: IbUmemOdp, start: int, end: int) -> None:
        """``mlx5_ib_invalidate_range``: zap the MTTs, unmap the DMA pages, queue the free of an emptied child.

        Runs under ``umem_mutex`` (5.4 after "Lift umem_mutex out of
        ib_umem_odp_unmap_dma_pages()"). With ``bug_unmap_takes_umem_mutex``
        the unmap takes the mutex itself and the "empty and not dying" test
        runs after it was dropped: two invalidations of one child can both
        pass it (bug H-4).
        """
        mr: Mlx5Mr | None = umem.private
        if mr is None:
            return
        start, end = max(umem.start, start), min(umem.end, end)
        if start >= end:
            return
        if self.driver.config.bug_unmap_takes_umem_mutex:
            self._zap(mr, umem, start, end, locked=False)
            return
        with umem.umem_mutex:
            self._zap(mr, umem, start, end, locked=True)

    def invalidate_interval(self, umem: IbUmemOdp, range: Range, cur_seq: int) -> bool:
        """``mlx5_ib_invalidate_range`` of 5.5 (an interval callback): refuse non-blockable; else under
        ``umem_mutex`` record ``cur_seq`` (``mmu_interval_set_seq``) and, if any page is mapped, zap the MTTs
        and unmap the DMA pages of the range."""
        if not range.blockable:
            return False
        with umem.umem_mutex:
            interval_set_seq(umem.notifier, cur_seq)
            mr: Mlx5Mr | None = umem.private
            start, end = max(umem.start, range.start), min(umem.end, range.end)
            if umem.npages and mr is not None and start < end:
                self._zap(mr, umem, start, end, locked=True)
        return True

    def _zap(self, mr: Mlx5Mr, umem: IbUmemOdp, start: int, end: int, *, locked: bool) -> None:
        if locked:
            self._zap_mtt(mr, umem, start, end)
        else:
            with umem.umem_mutex:
                self._zap_mtt(mr, umem, start, end)
        unmap_dma_pages(umem, start, end, take_lock=not locked)
        if umem.npages == 0 and mr.parent is not None and not umem.dying:
            sync.yield_now()  # the test and the mark are two steps (one critical section when locked)
            umem.dying = True
            mr.parent.num_leaf_free += 1
            schedule_work(umem.work, umem.owning_mm.kernel)

    def _zap_mtt(self, mr: Mlx5Mr, umem: IbUmemOdp, start: int, end: int) -> None:
        """Zap the MTT of every page of ``[start, end)`` that has an access bit in the DMA list."""
        first, stop = umem.index(start), umem.index(end)
        for index in sorted(i for i in umem.dma_list if first <= i < stop):  # a sparse walk of the DMA list
            if umem.dma_list[index] & ODP_ACCESS_MASK and mr.mtt.pop(index, None) is not None:
                self.mtt_used -= 1

    # -- implicit children ---------------------------------------------------------------
    def mr_leaf_free_action(self, umem: IbUmemOdp) -> None:
        """``mr_leaf_free_action`` (work queue): free a dying child after a grace period of ``mr_srcu``.

        The work is embedded in the umem it frees: legal, since a work item
        is deactivated before its function runs.
        """
        mr: Mlx5Mr = umem.private
        imr = mr.parent
        assert imr is not None
        chunk = umem.start // self.driver.config.implicit_chunk_size
        mr.parent = None
        self.mr_srcu.synchronize()
        ib_umem_odp_release(self.driver, self.driver.scheme, umem)
        if imr.live and imr.ksm.get(chunk) is mr:
            del imr.ksm[chunk]
        self.mr_cache_free(mr)
        self.driver.stats["child_free"] += 1
        imr.num_leaf_free -= 1
        if imr.num_leaf_free == 0:
            imr.q_leaf_free.wake_up_all()

    def mr_cache_free(self, mr: Mlx5Mr) -> None:
        """Return the MR's MTTs to the device."""
        self.mtt_used -= len(mr.mtt)
        mr.mtt.clear()
        mr.live = False

    def free_implicit_mr(self, imr: Mlx5Mr) -> None:
        """``mlx5_ib_free_implicit_mr``: mark every child dying, queue its free, wait for every pending free."""
        per_mm = imr.umem.per_mm
        assert per_mm is not None
        per_mm.umem_rwsem.down_read()
        try:
            for umem in per_mm.umem_tree:
                self._leaf_free(umem, imr)
        finally:
            per_mm.umem_rwsem.up_read()
        imr.q_leaf_free.wait_event(lambda: imr.num_leaf_free == 0)
        imr.ksm.clear()

    def _leaf_free(self, umem: IbUmemOdp, imr: Mlx5Mr) -> None:
        """``mr_leaf_free``: unmap one child of ``imr`` and queue its free unless it is dying already."""
        mr: Mlx5Mr | None = umem.private
        if mr is None or mr.parent is not imr:
            return
        take = self.driver.config.bug_unmap_takes_umem_mutex
        if take:
            unmap_dma_pages(umem, umem.start, umem.end, take_lock=True)
        else:
            umem.umem_mutex.lock()
        try:
            if not take:
                unmap_dma_pages(umem, umem.start, umem.end)
            if umem.dying:
                return
            umem.dying = True
            imr.num_leaf_free += 1
            schedule_work(umem.work, umem.owning_mm.kernel)
        finally:
            if not take:
                umem.umem_mutex.unlock()

    # -- what the device translates --------------------------------------------------------
    def translations(self, mm: MM) -> dict[int, int]:
        """Virtual page -> frame of every MTT the HCA can reach for ``mm`` (live MRs, live parents' children).

        Read as the fault path reads MRs, inside a ``mr_srcu`` read section: ``dereg_mr`` clears ``live`` and
        waits for the readers before it frees the umem (and a dying child is freed after a grace period too), so
        an MR seen live keeps its umem for the whole read. On OS threads (the main job's threads mode) the check
        of a process's mm runs on another thread while the process deregisters MRs: without the section it read
        a umem the process had just freed. The mm's MRs, an implicit MR's children and each MTT are copied
        first, each in one C call, as the process registers MRs and faults pages in meanwhile, and iterating a
        live dict there may raise "dictionary changed size during iteration".
        """
        found: dict[int, int] = {}
        with self.mr_srcu.read_section():
            for mr in list(self.mrs_of_mm.get(mm, ())):
                if not mr.live or mr.umem.owning_mm is not mm:
                    continue
                for reachable in list(mr.ksm.values()) if mr.implicit else (mr,):
                    base = reachable.umem.start >> reachable.umem.page_shift
                    for index, (pfn, _writable) in reachable.mtt.copy().items():
                        found[base + index] = pfn
        return found


class IbUcontext:
    """One open verbs context of a process on a device (``struct ib_ucontext``)."""

    def __init__(self, driver: RdmaOdpDriver, device: Mlx5Device, mm: MM, pid: Pid) -> None:
        self.driver = driver
        self.device = device
        self.mm = mm
        self.pid = pid
        self.mrs: list[Mlx5Mr] = []
        #: 5.3 only: this context's per_mm objects and their lock
        self.per_mm_list: list[Any] = []
        self.per_mm_list_lock = sync.Mutex("ib_ucontext.per_mm_list_lock")
        self.closed = False

    def __repr__(self) -> str:
        return f"<IbUcontext {self.device.name} mm={self.mm.id} mrs={len(self.mrs)}>"

    def reg_mr(self, start: int, length: int, *, write: bool = True) -> Mlx5Mr:
        """``ibv_reg_mr(..., IBV_ACCESS_ON_DEMAND)`` over ``[start, start + length)`` (``ib_umem_odp_get``)."""
        self._check_open()
        umem = IbUmemOdp(self.device, self.mm, start, length, writable=write)
        return self._register(umem)

    def reg_implicit_mr(self, *, write: bool = True) -> Mlx5Mr:
        """An implicit ODP MR over the whole address space (``ib_umem_odp_alloc_implicit``)."""
        self._check_open()
        umem = IbUmemOdp(self.device, self.mm, 0, TASK_SIZE, writable=write, implicit=True)
        return self._register(umem)

    def _register(self, umem: IbUmemOdp) -> Mlx5Mr:
        if self.driver.config.page_shift != self.mm.page_shift:
            raise InvalidArgumentError(
                f"rdma_odp page_shift {self.driver.config.page_shift} does not match the kernel's page shift "
                f"{self.mm.page_shift}: huge-page umems are not modelled"
            )
        umem.context = self
        with self.driver.in_process(self.mm):
            ib_init_umem_odp(self.driver, self.driver.scheme, umem, self)
        mr = Mlx5Mr(self.device, umem)
        umem.private = mr
        mr.live = True
        self.mrs.append(mr)
        self.device.mrs[mr] = None
        self.device.mrs_of_mm.setdefault(umem.owning_mm, {})[mr] = None
        return mr

    def dereg_mr(self, mr: Mlx5Mr) -> None:
        """``ibv_dereg_mr``: revoke the mkey, wait for faults to leave, free children, release the umem."""
        if mr not in self.mrs:
            raise InvalidArgumentError(f"{mr!r} is not registered on {self!r}")
        self.mrs.remove(mr)
        del self.device.mrs[mr]
        of_mm = self.device.mrs_of_mm[mr.umem.owning_mm]
        del of_mm[mr]
        if not of_mm:
            del self.device.mrs_of_mm[mr.umem.owning_mm]
        mr.live = False
        self.device.mr_srcu.synchronize()
        if mr.implicit:
            self.device.free_implicit_mr(mr)
        self.device.mtt_used -= len(mr.mtt)
        mr.mtt.clear()
        ib_umem_odp_release(self.driver, self.driver.scheme, mr.umem)

    def close(self) -> None:
        """Close the verbs context: deregister what is left (``ib_uverbs_close``, ``dealloc_ucontext``)."""
        for mr in list(self.mrs):
            self.dereg_mr(mr)
        if self.per_mm_list:
            self.mm.kernel.warn(f"{self!r} closed with {len(self.per_mm_list)} per_mm object(s) on its list")
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise InvalidArgumentError(f"{self!r} is closed")
