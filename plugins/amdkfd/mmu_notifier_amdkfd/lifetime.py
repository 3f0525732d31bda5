"""The kfd_process lifetime and the amdkfd module state it lives in (``kfd_process.c``).

:class:`Kfd` is the module's globals for one modelled machine, with the entry
points (open of /dev/kfd, the create-queue ioctl, amdgpu's eviction request,
a GPU access through IOMMUv2, module unload), the krefs of a process and the
notifier's ``release``. How a process is created and how ``release`` ends
depends on the kernel version: :class:`Scheme54` and :class:`Scheme513` here,
:class:`mmu_notifier_amdkfd.legacy.Scheme53` for the kernel before the series.

Lifetime (5.4): the initial kref belongs to the mm. ``release`` (mm teardown)
unhashes the process, waits for table readers, cancels the works, dequeues
every queue, clears ``p.mm`` and ``put`` s the notifier; ``free_notifier``
drops that kref after the notifier SRCU grace period; the last kref queues the
release work, which frees the per-GPU data, the PASID, the doorbells and the
lead-thread reference, then the process itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from mmu_notifier import MM, MMUNotifier, get, kmem, put, register, sync, synchronize
from mmu_notifier.errors import InvalidArgumentError, KernelError, MisuseError, NoMemoryError, NoSuchProcessError
from mmu_notifier.log import LOG
from mmu_notifier.srcu import Srcu
from mmu_notifier_amdkfd.config import KfdConfig
from mmu_notifier_amdkfd.device import Ida, KfdDevice, Queue, iommu_v2_fault
from mmu_notifier_amdkfd.faults import FaultInjector, Step
from mmu_notifier_amdkfd.kfd_process import KfdProcess, mark
from mmu_notifier_amdkfd.process_table import ProcessTable
from mmu_notifier_amdkfd.workqueue import Workqueue

if TYPE_CHECKING:
    from mmu_notifier import Kernel
    from mmu_notifier.plugins import MMUNotifierOps


class Kfd:
    """The amdkfd module's globals on one modelled machine, and its entry points.

    ``ops`` is the driver's ops table in ``kernel`` (what registration names
    the driver by). Nothing here starts a task until work is queued.
    """

    def __init__(self, kernel: Kernel, ops: MMUNotifierOps, config: KfdConfig, scheme: Scheme54) -> None:
        self.kernel = kernel
        self.ops = ops
        self.config = config
        self.scheme = scheme
        self.devices = [KfdDevice(i, config.cwsr) for i in range(config.gpus)]
        self.table = ProcessTable()
        self.pasids = Ida("amdgpu_pasid_ida", config.pasid_min, config.pasid_max)
        self.doorbell_slices = Ida("doorbell_ida", 1, config.doorbell_slices - 1)
        self.process_wq = Workqueue("kfd_process_wq", kernel.record_bug)
        self.restore_wq = Workqueue("kfd_restore_wq", kernel.record_bug)
        self.system_wq = Workqueue("events", kernel.record_bug)
        self.faults = FaultInjector(config.faults, kernel.faults)
        #: ``get_task_struct`` references on lead threads that processes hold
        self.task_refs = sync.Atomic("kfd.lead_thread_refs", 0)
        #: the kernel's plain RCU, which the 5.3 unwind waited for by mistake (table readers use SRCU)
        self.rcu = Srcu("rcu")
        #: every kfd_process allocated and not yet freed (what kmemleak would list)
        self.live: set[KfdProcess] = set()

    # -- helpers ---------------------------------------------------------------
    def inject(self, step: Step, process: KfdProcess) -> None:
        """Raise -ENOMEM if the fault plan says ``step`` fails now (the caller holds ``kfd_processes_mutex``)."""
        if self.faults.fail(step):
            raise self.injected(step, process)

    def injected(self, step: Step, process: KfdProcess) -> NoMemoryError:
        """The error of an injected failure of ``step``, announced in the timeline and the log."""
        mark(f"fail {step}", process)
        if LOG.on:
            LOG.event("amdkfd.init_failed", step=step, pasid=process.pasid)
        return NoMemoryError(f"{step} failed (injected) for kfd_process pasid {process.pasid:#x}")

    def ida_free(self, ida: Ida, id_: int) -> None:
        """``ida_free``, WARNing (as the kernel does) on an id that is not allocated."""
        if not ida.free(id_):
            self.kernel.warn(f"{ida.name}: ida_free called for id={id_} which is not allocated")

    def get_task_struct(self, process: KfdProcess) -> None:
        """``get_task_struct(process->lead_thread)``."""
        self.task_refs.inc()
        process.lead_thread = True

    def put_task_struct(self, process: KfdProcess) -> None:
        """``put_task_struct(process->lead_thread)``."""
        if process.lead_thread:
            process.lead_thread = False
            self.task_refs.dec()

    def free_process(self, process: KfdProcess) -> None:
        """``kfree(process)``: the allocation, and the notifier embedded in it unless the core freed that."""
        mark("kfree", process)
        self.live.discard(process)
        if not process.notifier_freed:
            kmem.kfree(process.mmu_notifier)
        kmem.kfree(process)

    # -- lookups and references -----------------------------------------------
    def find_process(self, mm: MM) -> KfdProcess | None:
        """``find_process``: the process of ``mm``, no reference taken (ioctl paths; ``current->mm`` pins it)."""
        with self.table.srcu.read_section():
            return self.table.find(mm)

    def lookup_process_by_mm(self, mm: MM) -> KfdProcess | None:
        """``kfd_lookup_process_by_mm``: the process of ``mm`` with a kref, or None."""
        with self.table.srcu.read_section():
            process = self.table.find(mm)
            if process is not None and process.ref.inc() == 1:
                self.kernel.warn("kref_get on a kfd_process whose refcount was 0")
            return process

    def unref_process(self, process: KfdProcess) -> None:
        """``kfd_unref_process``: the last kref queues the release work (never sleeps)."""
        left = process.ref.dec()
        if left == 0:
            self.process_wq.queue_work(process.release_work)
        elif left < 0:
            self.kernel.warn(f"kfd_process pasid {process.pasid:#x}: kref underflow")

    # -- entry points -----------------------------------------------------------
    def kfd_create_process(self, mm: MM) -> KfdProcess:
        """``kfd_open`` -> ``kfd_create_process`` from a thread of ``mm``: find or create its process.

        The calling thread keeps ``mm`` alive while it is in the syscall (the
        kernel's ``current->mm``), modelled by an ``mm_users`` reference for
        the duration; an mm that already exited gives -EINVAL. Raises the
        error of a failed creation step (:class:`NoMemoryError`).
        """
        if not mm.mmget_not_zero():
            raise InvalidArgumentError(f"mm {mm.id} has exited: the thread has no mm")
        try:
            return self.scheme.open(self, mm)
        finally:
            mm.mmput()

    def create_queue(self, mm: MM, gpu: int, ring_start: int, ring_end: int) -> Queue:
        """``kfd_ioctl_create_queue`` from a thread of ``mm``: a user queue on GPU ``gpu`` with its ring in ``mm``.

        Finds the process without a reference (the thread's ``mm_users``
        reference keeps it alive: ``release`` only runs when the mm exits).
        """
        if not 0 <= gpu < len(self.devices):
            raise InvalidArgumentError(f"no GPU {gpu} (the topology has {len(self.devices)})")
        if not mm.mmget_not_zero():
            raise InvalidArgumentError(f"mm {mm.id} has exited")
        try:
            process = self.find_process(mm)
            if process is None:
                raise InvalidArgumentError(f"mm {mm.id} has no kfd process: open /dev/kfd first")
            with process.mutex:
                pdd = process.bind_to_device(self.devices[gpu])
                return process.pqm_create_queue(pdd, ring_start, ring_end)
        finally:
            mm.mmput()

    def schedule_evict_and_restore_process(self, mm: MM) -> bool:
        """``kgd2kfd_schedule_evict_and_restore_process``: amdgpu must evict the BOs of ``mm``'s process.

        Queues the eviction work (which queues the restore work); False if
        ``mm`` has no process or an eviction is already pending.
        """
        process = self.lookup_process_by_mm(mm)
        if process is None:
            return False
        try:
            return self.system_wq.queue_work(process.eviction_work)
        finally:
            self.unref_process(process)

    def device_access(self, mm: MM, address: int, write: bool = False) -> int | None:
        """A GPU access at ``address`` by a queue of ``mm``'s process; the frame, or None to retry later.

        The GPU runs only while the process has an active queue. The
        translation is ATS through IOMMUv2, which walks the CPU page table and,
        on a miss, resolves the fault as ``amd_iommu_v2``'s PPR handler does
        (``mmget_not_zero``, ``handle_mm_fault`` under the mmap lock for read).
        """
        process = self.lookup_process_by_mm(mm)
        if process is None:
            return None
        # the kref keeps the process alive even if the fault's mmput is the last one and tears the mm down
        try:
            with process.mutex:
                if process.mm is not mm or not process.runs_queues():
                    return None
            pfn = iommu_v2_fault(mm, address, write)
            if pfn is None:
                return None
            with process.mutex:
                if process.mm is not mm or not process.runs_queues():
                    return None
                process.device_pages.add(address >> mm.page_shift)
            return pfn
        finally:
            self.unref_process(process)

    def translations(self, mm: MM) -> dict[int, int]:
        """What the GPUs translate in ``mm`` now: each page they accessed -> the CPU's current frame there."""
        with self.table.srcu.read_section():
            process = self.table.find(mm)
            if process is None:
                return {}
            with process.mutex:
                pages = sorted(process.device_pages)
        with mm.page_table_lock:
            entries = ((vpn, mm.page_table.lookup(vpn)) for vpn in pages)
            return {vpn: pte.pfn for vpn, pte in entries if pte is not None}

    def release(self, process: KfdProcess, mm: MM) -> None:
        """``kfd_process_notifier_release``: the mm is being torn down (inside the notifier SRCU read section).

        Unhash the process, wait until no table reader can still use it,
        cancel its works, dequeue every queue and drop the queue manager, clear
        ``p.mm``, then let the scheme drop the mm's reference.
        """
        if process.mm is not mm:
            self.kernel.warn(f"kfd_process_notifier_release: process of mm {process.mm_key.id} released for mm {mm.id}")
            return
        with self.table.mutex:
            self.table.remove(process)
        self.table.srcu.synchronize()
        self.system_wq.cancel_work_sync(process.eviction_work)
        self.restore_wq.cancel_work_sync(process.restore_work)
        with process.mutex:
            process.dequeue_from_all_devices()
            process.pqm_uninit()
            process.mm = None
        if LOG.on:
            LOG.event("amdkfd.release", pasid=process.pasid, mm=mm.id)
        self.scheme.release_done(self, process, mm)

    def module_exit(self) -> None:
        """Module unload: ``mmu_notifier_synchronize``, then drain kfd's workqueues.

        The synchronize makes every deferred ``free_notifier`` (and 5.3
        ``call_srcu`` callback) run; those may queue release works, which the
        drain then waits for. (5.4's ``amdgpu_exit`` destroys kfd's workqueues
        in ``amdgpu_amdkfd_fini`` *before* its ``mmu_notifier_synchronize``;
        the model waits in the order that leaves nothing behind.)
        """
        synchronize(self.kernel)
        for wq in (self.system_wq, self.restore_wq, self.process_wq):
            wq.flush()

    def leaks(self) -> dict[str, str]:
        """Everything still held, by kind (``pasids``, ``doorbell_slices``, ``lead_threads``, ``processes``)."""
        found = {}
        if self.pasids.in_use():
            found["pasids"] = f"PASIDs still allocated: {sorted(self.pasids.in_use())}"
        if self.doorbell_slices.in_use():
            found["doorbell_slices"] = f"doorbell slices still allocated: {sorted(self.doorbell_slices.in_use())}"
        if self.task_refs.value:
            found["lead_threads"] = f"{self.task_refs.value} lead_thread reference(s) never put"
        if self.live:
            found["processes"] = f"{len(self.live)} kfd_process(es) never freed"
        return found



class Unwind:
    """The label ladder of a kernel init function's error path.

    Each step that succeeded pushes its undo; when a later step raises a
    :class:`KernelError` the undos run newest first and the error propagates.
    A model bug (:class:`ModelBug`) propagates without unwinding.
    """

    def __init__(self) -> None:
        self._undo: list[Callable[[], object]] = []

    def push(self, undo: Callable[[], object]) -> None:
        """What to do if a later step fails."""
        self._undo.append(undo)

    def __enter__(self) -> Unwind:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        if isinstance(error, KernelError):
            for undo in reversed(self._undo):
                undo()


class Scheme54:
    """Linux 5.4, after patches 09 and 10 of the get/put series.

    ``create_process`` makes registration (plain ``register``, users = 1) the
    last step that can fail ("Must be last, have to use release destruction
    after this"): everything before it is unwound by hand, never published;
    the lead-thread reference and the table insertion come after it and
    cannot fail. The CWSR set-up runs after creation, in
    ``kfd_create_process``; if it fails, open fails but the process stays in
    the table, fully working, until the mm is torn down (the next open finds
    it). ``release`` ends with ``mmu_notifier_put``; ``free_notifier`` drops
    the kref after the grace period.
    """

    name = "5.4"

    #: the members of ``kfd_process_mmu_notifier_ops`` this kernel fills (no ``alloc_notifier``: plain register)
    ops: ClassVar[frozenset[str]] = frozenset({"release", "free_notifier"})

    def open(self, kfd: Kfd, mm: MM) -> KfdProcess:
        """The body of ``kfd_create_process`` under ``kfd_processes_mutex``."""
        with kfd.table.mutex:
            process = kfd.find_process(mm)
            if process is None:
                process = self.create_process(kfd, mm)
                self.after_create(kfd, process)
        return process

    def create_process(self, kfd: Kfd, mm: MM) -> KfdProcess:
        """``create_process``: on return the process is operational and freed when the mm is released."""
        process = KfdProcess(kfd, mm)
        with Unwind() as unwind:
            unwind.push(lambda: kfd.free_process(process))
            process.alloc_pasid()
            unwind.push(process.free_pasid)
            process.alloc_doorbells()
            unwind.push(process.free_doorbells)
            process.pqm_init()
            unwind.push(process.pqm_uninit)
            process.init_apertures()
            unwind.push(process.destroy_pdds)
            self.publish(kfd, process, unwind)
        if LOG.on:
            LOG.event("amdkfd.create", pasid=process.pasid, mm=mm.id, scheme=self.name)
        return process

    def publish(self, kfd: Kfd, process: KfdProcess, unwind: Unwind) -> None:
        """Register the notifier (the last failable step), then take the lead thread and hash the process."""
        register(process.mmu_notifier, process.mm_key, driver=kfd.ops)
        kfd.get_task_struct(process)
        kfd.table.add(process)

    def after_create(self, kfd: Kfd, process: KfdProcess) -> None:
        """CWSR set-up; a failure fails the open and leaves the process for mm teardown."""
        process.init_cwsr_apu()

    def release_done(self, kfd: Kfd, process: KfdProcess, mm: MM) -> None:
        """The end of ``release``: ``mmu_notifier_put``; ``free_notifier`` will drop the kref."""
        put(process.mmu_notifier)


class Scheme513(Scheme54):
    """Linux 5.13 (``scheme = "5.13"``): the 2021 conversion to ``mmu_notifier_get``, with its CWSR clean-up.

    Felix Kuehling's "drm/amdkfd: Use mmu_notifier_get" (commit 3248b6d3cbcd,
    posted 12 February 2021) and its companion "drm/amdkfd: Cleanup
    kfd_process if init_cwsr_apu fails" were merged for Linux 5.13 (the drm
    pull for 5.13-rc1 lists both), so 5.13 is the first kernel that shipped
    this behaviour.

    The process is hashed *before* the ``get``, because the driver's
    ``alloc_notifier`` finds it in the table; ``get`` must return the
    notifier embedded in that very process (the kernel's ``BUG_ON``). A CWSR
    failure now undoes the open: unhash, drop the mutex, wait for table
    readers and ``put``, leaving the rest to ``free_notifier``.
    """

    name = "5.13"

    #: the members of ``kfd_process_mmu_notifier_ops`` this kernel fills
    ops: ClassVar[frozenset[str]] = frozenset({"release", "alloc_notifier", "free_notifier"})

    def open(self, kfd: Kfd, mm: MM) -> KfdProcess:
        """``kfd_create_process`` with the ``out_destroy`` path for a failed CWSR set-up."""
        table = kfd.table
        table.mutex.lock()
        locked = True
        try:
            process = kfd.find_process(mm)
            if process is None:
                process = self.create_process(kfd, mm)
                try:
                    process.init_cwsr_apu()
                except KernelError:
                    table.remove(process)
                    table.mutex.unlock()
                    locked = False
                    table.srcu.synchronize()
                    put(process.mmu_notifier)
                    raise
            return process
        finally:
            if locked:
                table.mutex.unlock()

    def publish(self, kfd: Kfd, process: KfdProcess, unwind: Unwind) -> None:
        """Hash the process (``alloc_notifier`` looks it up), ``get`` its notifier, take the lead thread."""
        kfd.table.add(process)
        unwind.push(lambda: kfd.table.remove(process))
        subscription = get(kfd.ops, process.mm_key)
        if subscription is not process.mmu_notifier:
            raise MisuseError(f"kernel BUG: get returned {subscription!r}, not the notifier of {process!r}")
        kfd.get_task_struct(process)

    def alloc_notifier(self, kfd: Kfd, mm: MM) -> MMUNotifier:
        """``kfd_process_alloc_notifier``: the notifier of the process hashed for ``mm``, or ESRCH."""
        process = kfd.find_process(mm)
        if process is None:
            raise NoSuchProcessError(f"mm {mm.id} has no kfd_process in the table")
        return process.mmu_notifier
