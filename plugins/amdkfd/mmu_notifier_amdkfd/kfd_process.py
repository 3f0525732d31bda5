"""``struct kfd_process``: the per-mm object of amdkfd, with its embedded ``struct mmu_notifier``.

:class:`KfdProcess` has its kref, PASID, doorbell slice, lead-thread
reference, per-GPU data (:class:`~mmu_notifier_amdkfd.device.KfdProcessDevice`)
with user queues, the process queue manager's queue ids, the eviction,
restore and release works, and its embedded notifier
(:class:`KfdProcessNotifier`). Its methods are the creation steps and their
undos, and the three works.

The notifier is a separate object embedded in the process, as in C: the core
poisons it when ``free_notifier`` returns, while the process may live on (a
PASID or mm lookup can still hold a kref); :func:`mmu_notifier.kmem.kfree` poisons the process
when its memory goes. The process lifetime (create, release, the krefs) is
:mod:`mmu_notifier_amdkfd.lifetime`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmu_notifier import MM, MMUNotifier, Prot, sync
from mmu_notifier.errors import (
    BusyError,
    NoMemoryError,
)
from mmu_notifier.log import LOG
from mmu_notifier_amdkfd.device import Ida, KfdDevice, KfdProcessDevice, Queue
from mmu_notifier_amdkfd.workqueue import Work

if TYPE_CHECKING:
    from mmu_notifier_amdkfd.lifetime import Kfd

#: ``KFD_CWSR_TBA_TMA_SIZE``: the trap handler (TBA) page and its memory (TMA) page.
CWSR_PAGES = 2


def mark(op: str, obj: object) -> None:
    """A named scheduling point, so an explorer timeline shows the kernel step (``op``) on ``obj``."""
    sync.backend().point(op, obj)


class KfdProcessNotifier(MMUNotifier):
    """The ``struct mmu_notifier`` embedded in a ``kfd_process``; ``process`` is its ``container_of``."""

    def __init__(self, process: KfdProcess) -> None:
        super().__init__()
        self.process = process


class KfdProcess:
    """``struct kfd_process``: one per mm that opened /dev/kfd.

    ``ref`` is the kref (the initial reference belongs to the mm/notifier;
    lookups by mm take temporary ones); ``mutex`` is ``p->mutex`` and guards
    the per-GPU data, queues and ``device_pages``; ``mm`` is cleared by
    ``release``. ``mm_key`` keeps the mm the process was hashed under, which
    the table needs after ``mm`` was cleared.

    ``device_pages`` are the virtual pages the GPUs translated through the
    IOMMUv2 (which walks the CPU page table, so the device's view of a page is
    the CPU's current entry); they are forgotten when the queues are dequeued.
    """

    def __init__(self, kfd: Kfd, mm: MM) -> None:
        self.kfd = kfd
        self.mm: MM | None = mm
        self.mm_key = mm
        self.ref = sync.Atomic("kfd_process.ref", 1)
        self.mutex = sync.Mutex("kfd_process.mutex")
        self.pasid = 0
        self.doorbell_index = 0
        self.pqm: Ida | None = None
        self.pdds: list[KfdProcessDevice] = []
        self.hashed = False
        self.lead_thread = False
        self.device_pages: set[int] = set()
        self.eviction_work = Work("evict_process_worker", self._evict_worker)
        self.restore_work = Work("restore_process_worker", self._restore_worker)
        self.release_work = Work("kfd_process_wq_release", self._wq_release)
        self.mmu_notifier = KfdProcessNotifier(self)
        #: set by ``free_notifier``: the core has freed the embedded notifier
        self.notifier_freed = False
        kfd.live.add(self)

    def __repr__(self) -> str:
        return f"<KfdProcess pasid={self.pasid} mm={self.mm.id if self.mm else None}>"

    # -- creation steps and their undos -------------------------------------
    def alloc_pasid(self) -> None:
        """``kfd_pasid_alloc``; -ENOMEM when the PASID range is exhausted."""
        pasid = self.kfd.pasids.alloc()
        if pasid is None:
            raise NoMemoryError(f"no free PASID in {self.kfd.pasids.first:#x}-{self.kfd.pasids.last:#x}")
        self.pasid = pasid

    def free_pasid(self) -> None:
        """``kfd_pasid_free``."""
        self.kfd.ida_free(self.kfd.pasids, self.pasid)
        self.pasid = 0

    def alloc_doorbells(self) -> None:
        """``kfd_alloc_process_doorbells``: one doorbell slice (page) for the process."""
        index = self.kfd.doorbell_slices.alloc()
        if index is None:
            raise NoMemoryError("no free doorbell slice")
        self.doorbell_index = index

    def free_doorbells(self) -> None:
        """``kfd_free_process_doorbells``."""
        if self.doorbell_index:
            self.kfd.ida_free(self.kfd.doorbell_slices, self.doorbell_index)
            self.doorbell_index = 0

    def pqm_init(self) -> None:
        """``pqm_init``: the queue-id bitmap; may fail (-ENOMEM, injectable)."""
        self.kfd.inject("pqm_init", self)
        self.pqm = Ida("pqm.queue_slot_bitmap", 0, self.kfd.config.queues_per_process - 1)

    def pqm_uninit(self) -> None:
        """``pqm_uninit``: drop the queue manager (its queues were dequeued already)."""
        self.pqm = None

    def init_apertures(self) -> None:
        """``kfd_init_apertures``: per-GPU data for every device; may fail (-ENOMEM, injectable)."""
        self.kfd.inject("init_apertures", self)
        doorbells = self.kfd.config.doorbells_per_process
        self.pdds = [KfdProcessDevice(dev, Ida("qpd.doorbell_bitmap", 0, doorbells - 1)) for dev in self.kfd.devices]

    def destroy_pdds(self) -> None:
        """``kfd_process_free_outstanding_kfd_bos`` + ``kfd_process_destroy_pdds``: VMs, doorbell bitmaps, CWSR."""
        self.pdds = []

    def init_cwsr_apu(self) -> None:
        """``kfd_process_init_cwsr_apu``: map the trap handler into the process on every CWSR GPU.

        Each mapping is a ``vm_mmap`` (it takes the mmap lock for write), so it
        waits for any invalidation that holds the lock. A failure leaves the
        mappings already made in the mm; they go with it. A GPU already set up
        is skipped, so a second call does nothing.
        """
        mm = self.mm
        assert mm is not None
        for pdd in self.pdds:
            if not pdd.dev.cwsr_enabled or pdd.tba_addr is not None:
                continue
            if self.kfd.faults.fail("cwsr"):
                # do_mmap fails inside vm_mmap, which holds mmap_sem for write meanwhile
                mm.mmap_lock.down_write()
                mm.mmap_lock.up_write()
                raise self.kfd.injected("cwsr", self)
            pdd.tba_addr = mm.mmap(CWSR_PAGES * mm.page_size, prot=Prot.READ | Prot.EXEC, shared=True)

    # -- queues (the caller holds ``mutex``) ----------------------------------
    def bind_to_device(self, dev: KfdDevice) -> KfdProcessDevice:
        """``kfd_bind_process_to_device``: the GPU's per-process data (its VM is not modelled)."""
        return self.pdds[dev.index]

    def pqm_create_queue(self, pdd: KfdProcessDevice, ring_start: int, ring_end: int) -> Queue:
        """``pqm_create_queue``: a queue id and a doorbell, then the queue (inactive while evicted)."""
        assert self.pqm is not None
        queue_id = self.pqm.alloc()
        if queue_id is None:
            raise NoMemoryError(f"all {self.pqm.size} queue slots of pasid {self.pasid:#x} are in use")
        doorbell = pdd.doorbell_ids.alloc()
        if doorbell is None:
            self.pqm.free(queue_id)
            raise BusyError(f"all doorbells of pasid {self.pasid:#x} on gpu {pdd.dev.id} are in use")
        queue = Queue(queue_id, doorbell, ring_start, ring_end, active=pdd.evicted == 0)
        pdd.queues.append(queue)
        return queue

    def dequeue_from_all_devices(self) -> None:
        """``kfd_process_dequeue_from_all_devices``: stop and destroy every queue; the device view goes."""
        for pdd in self.pdds:
            for queue in pdd.queues:
                queue.active = False
                pdd.doorbell_ids.free(queue.doorbell_id)
                assert self.pqm is not None  # queues exist only between pqm_init and pqm_uninit
                self.pqm.free(queue.queue_id)
            pdd.queues = []
        self.device_pages.clear()

    def runs_queues(self) -> bool:
        """True when some queue is active (the GPU may access the mm)."""
        return any(queue.active for pdd in self.pdds for queue in pdd.queues)

    def _set_queues_active(self, pdd: KfdProcessDevice, active: bool) -> None:
        for queue in pdd.queues:
            queue.active = active

    # -- works ------------------------------------------------------------
    def _evict_worker(self) -> None:
        """``evict_process_worker``: wait for a restore in flight, evict every queue, schedule the restore."""
        kfd = self.kfd
        kfd.restore_wq.flush_work(self.restore_work)
        with self.mutex:
            for pdd in self.pdds:
                pdd.evicted += 1
                if pdd.evicted == 1:
                    self._set_queues_active(pdd, False)
        kfd.restore_wq.queue_work(self.restore_work)

    def _restore_worker(self) -> None:
        """``restore_process_worker``: the BOs are back, so restart the queues of the outermost eviction."""
        with self.mutex:
            for pdd in self.pdds:
                if pdd.evicted:
                    pdd.evicted -= 1
                    if not pdd.evicted:
                        self._set_queues_active(pdd, True)

    def _wq_release(self) -> None:
        """``kfd_process_wq_release``: the last kref is gone; free everything, then the process."""
        kfd = self.kfd
        if LOG.on:
            LOG.event("amdkfd.free", pasid=self.pasid)
        self.destroy_pdds()
        self.free_pasid()
        self.free_doorbells()
        kfd.put_task_struct(self)
        kfd.free_process(self)
