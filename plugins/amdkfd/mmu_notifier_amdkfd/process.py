"""``struct kfd_process`` and the amdkfd module state it lives in (``kfd_process.c`` of Linux 5.4).

What is modelled, by kernel object:

* :class:`ProcessTable`: ``kfd_processes_table``, 32 buckets hashed by the mm
  pointer; writers hold ``kfd_processes_mutex``, readers sit in read sections
  of the table's own SRCU domain ``kfd_processes_srcu``;
* :class:`KfdProcess`: ``struct kfd_process`` with its kref, PASID, doorbell
  slice, lead-thread reference, per-GPU data (:class:`KfdProcessDevice`) with
  user :class:`Queue` s, the process queue manager's queue ids, the eviction,
  restore and release works, and its embedded ``struct mmu_notifier``
  (:class:`KfdProcessNotifier`);
* :class:`Ida`: the bounded id allocators PASIDs, doorbell slices, queue ids
  and per-process doorbells come from;
* :class:`Workqueue`: ``kfd_process_wq``, ``kfd_restore_wq`` and the system
  workqueue the eviction work runs on;
* :class:`Kfd`: the module's globals for one modelled machine, with the entry
  points (open of /dev/kfd, the create-queue ioctl, amdgpu's eviction request,
  a GPU access through IOMMUv2, module unload) and the notifier's ``release``.

Lifetime (5.4): the initial kref belongs to the mm. ``release`` (mm teardown)
unhashes the process, waits for table readers, cancels the works, dequeues
every queue, clears ``p.mm`` and ``put`` s the notifier; ``free_notifier``
drops that kref after the notifier SRCU grace period; the last kref queues the
release work, which frees the per-GPU data, the PASID, the doorbells and the
lead-thread reference, then the process itself.

The notifier is a separate object embedded in the process, as in C: the core
poisons it when ``free_notifier`` returns, while the process may live on (a
PASID or mm lookup can still hold a kref); :func:`kfree` poisons the process
when its memory goes. How a process is created and how ``release`` ends
depends on the scheme: :class:`Scheme54`, :class:`SchemeGet` here and
:class:`mmu_notifier_amdkfd.legacy.SchemeLegacy`.
"""

from __future__ import annotations

import errno
import heapq
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmu_notifier import MM, MMUNotifier, Prot, get, legacy, put, register, sync, synchronize
from mmu_notifier.errors import (
    BadAddressError,
    BusyError,
    DoubleFreeError,
    InvalidArgumentError,
    KernelError,
    MisuseError,
    NoMemoryError,
    UseAfterFreeError,
)
from mmu_notifier.log import LOG
from mmu_notifier.srcu import Srcu
from mmu_notifier_amdkfd.config import KfdConfig
from mmu_notifier_amdkfd.faults import FaultInjector, Step

if TYPE_CHECKING:
    from mmu_notifier import Kernel
    from mmu_notifier.plugins import MMUNotifierOps

#: ``KFD_PROCESS_TABLE_SIZE`` is ``1 << 5`` buckets.
PROCESS_TABLE_BITS = 5
#: ``KFD_CWSR_TBA_TMA_SIZE``: the trap handler (TBA) page and its memory (TMA) page.
CWSR_PAGES = 2
#: ``GOLDEN_RATIO_32`` of ``hash_32``, which ``hash_min`` uses for the table's bucket.
_GOLDEN_RATIO_32 = 0x61C88647


def mark(op: str, obj: object) -> None:
    """A named scheduling point, so an explorer timeline shows the kernel step (``op``) on ``obj``."""
    sync.backend().point(op, obj)


def _caller_site() -> str:
    frame = sys._getframe(2)
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


# -- kmalloc'ed driver objects -------------------------------------------------

_freed_classes: dict[type, type] = {}


def _freed_class(cls: type) -> type:
    freed = _freed_classes.get(cls)
    if freed is None:

        def touch(self: Any, name: str, *value: Any) -> Any:
            site = object.__getattribute__(self, "__dict__").get("_free_site")
            raise UseAfterFreeError(f"{cls.__name__}.{name} touched after kfree", free_site=site)

        freed = type(
            f"Freed{cls.__name__}",
            (cls,),
            # ``_poisoned`` lets the explorer describe a freed object by the class it had
            {"__getattribute__": touch, "__setattr__": touch, "_poisoned": True,
             "__repr__": lambda self: f"<freed {cls.__name__} at {id(self):#x}>"},
        )
        _freed_classes[cls] = freed
    return freed


def kfree(obj: object) -> None:
    """``kfree``: any later access to ``obj`` raises :class:`UseAfterFreeError` naming this call site.

    Raises :class:`DoubleFreeError` if ``obj`` was freed already.
    """
    site = _caller_site()
    if getattr(type(obj), "_poisoned", False):
        first = object.__getattribute__(obj, "__dict__").get("_free_site")
        raise DoubleFreeError(f"{type(obj).__mro__[1].__name__} freed twice (again at {site})", free_site=first)
    obj.__dict__["_free_site"] = site
    obj.__class__ = _freed_class(type(obj))


# -- allocators and works ------------------------------------------------------


class Ida:
    """A bounded id allocator (``struct ida``): ``alloc`` hands out the lowest free id in ``[first, last]``.

    Ids below the high-water mark that were freed sit in a heap, so the lowest
    free id is the heap's top if there is one, else the high-water mark.
    """

    def __init__(self, name: str, first: int, last: int) -> None:
        self.name = name
        self.first = first
        self.last = last
        self.lock = sync.SpinLock(f"{name}.lock")
        self._next = first
        self._freed: list[int] = []
        self._used: set[int] = set()

    def alloc(self) -> int | None:
        """The lowest free id, or None when all ``last - first + 1`` are in use."""
        with self.lock:
            if self._freed:
                id_ = heapq.heappop(self._freed)
            elif self._next <= self.last:
                id_ = self._next
                self._next += 1
            else:
                return None
            self._used.add(id_)
            return id_

    def free(self, id_: int) -> bool:
        """Return ``id_`` to the pool; False (nothing changed) if it was not allocated."""
        with self.lock:
            if id_ not in self._used:
                return False
            self._used.remove(id_)
            heapq.heappush(self._freed, id_)
            return True

    def in_use(self) -> frozenset[int]:
        """The ids allocated now."""
        return frozenset(self._used)

    @property
    def size(self) -> int:
        """How many ids the pool holds."""
        return self.last - self.first + 1


@dataclass(eq=False)
class Work:
    """A (delayed) work item. The model has no timers: a delayed work is queued at once."""

    name: str
    fn: Callable[[], None]
    pending: bool = False
    running: bool = False


class Workqueue:
    """A workqueue with one worker task, started when work arrives and gone when the queue is empty.

    Locking: ``lock`` guards the queue and the items' ``pending``/``running``
    flags; ``done`` is woken whenever an item finishes. An exception escaping
    an item is handed to ``on_error`` (the kernel records it as a bug) and the
    worker goes on, as the core's SRCU callback worker does.
    """

    def __init__(self, name: str, on_error: Callable[[BaseException], None]) -> None:
        self.name = name
        self.on_error = on_error
        self.lock = sync.SpinLock(f"{name}.lock")
        self.done = sync.WaitQueue(name)
        self._queue: deque[Work] = deque()
        self._worker = False
        self._running: Work | None = None

    def queue_work(self, work: Work) -> bool:
        """``queue_work``: False if ``work`` was already pending. Never sleeps."""
        with self.lock:
            if work.pending:
                return False
            work.pending = True
            self._queue.append(work)
            start = not self._worker
            self._worker = True
        if start:
            sync.backend().spawn_daemon(self.name, self._work_loop)
        return True

    def cancel_work_sync(self, work: Work) -> bool:
        """``cancel_delayed_work_sync``: dequeue ``work`` and wait for a running instance; True if it was pending."""
        with self.lock:
            pending = work.pending
            if pending:
                work.pending = False
                self._queue.remove(work)
        self.done.wait_event(lambda: not work.running)
        return pending

    def flush_work(self, work: Work) -> None:
        """``flush_delayed_work``: wait until ``work`` is neither pending nor running."""
        self.done.wait_event(lambda: not work.pending and not work.running)

    def flush(self) -> None:
        """``flush_workqueue`` (and the drain of ``destroy_workqueue``): wait until the queue is idle."""
        self.done.wait_event(lambda: not self._queue and self._running is None)

    def _work_loop(self) -> None:
        while True:
            with self.lock:
                if not self._queue:
                    self._worker = False
                    break
                work = self._queue.popleft()
                work.pending = False
                work.running = True
                self._running = work
            try:
                work.fn()
            except BaseException as error:
                self.on_error(error)
            with self.lock:
                work.running = False
                self._running = None
            self.done.wake_up_all()
        self.done.wake_up_all()


# -- the process table -----------------------------------------------------------


class ProcessTable:
    """``kfd_processes_table``: processes hashed by their mm.

    Writers (insert, delete) hold ``mutex`` (``kfd_processes_mutex``); readers
    run inside a read section of ``srcu`` (``kfd_processes_srcu``) and may use
    what they found until they leave it. A bucket is a tuple replaced under the
    mutex, so a reader sees a consistent snapshot, as an RCU hlist walker does.
    """

    def __init__(self) -> None:
        self.mutex = sync.Mutex("kfd_processes_mutex")
        self.srcu = Srcu("kfd_processes_srcu")
        self._buckets: list[tuple[KfdProcess, ...]] = [()] * (1 << PROCESS_TABLE_BITS)

    @staticmethod
    def bucket(mm: MM) -> int:
        """``hash_min(mm, 5)``: the bucket of ``mm`` (its id stands for the pointer)."""
        return ((mm.id * _GOLDEN_RATIO_32) & 0xFFFFFFFF) >> (32 - PROCESS_TABLE_BITS)

    def _assert_writer(self) -> None:
        if not self.mutex.held_by_current():
            raise MisuseError("kfd_processes_table changed without kfd_processes_mutex (lockdep_assert_held)")

    def add(self, process: KfdProcess) -> None:
        """``hash_add_rcu``; the caller holds the mutex."""
        self._assert_writer()
        index = self.bucket(process.mm_key)
        self._buckets[index] = (process, *self._buckets[index])
        process.hashed = True

    def remove(self, process: KfdProcess) -> None:
        """``hash_del_rcu``; the caller holds the mutex. Removing an unhashed process changes nothing."""
        self._assert_writer()
        if not process.hashed:
            return
        index = self.bucket(process.mm_key)
        self._buckets[index] = tuple(p for p in self._buckets[index] if p is not process)
        process.hashed = False

    def find(self, mm: MM) -> KfdProcess | None:
        """``find_process_by_mm``; the caller is in a read section of ``srcu`` (or holds the mutex)."""
        for process in self._buckets[self.bucket(mm)]:
            if process.mm is mm:
                return process
        return None

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets)


# -- devices, queues and the process ---------------------------------------------


@dataclass(eq=False)
class KfdDevice:
    """A GPU of the KFD topology (``struct kfd_dev``), as far as process lifetime goes."""

    index: int
    cwsr_enabled: bool

    @property
    def id(self) -> int:
        """The topology's gpu_id (the kernel hashes it; the model numbers from 1)."""
        return self.index + 1


@dataclass(eq=False)
class Queue:
    """A user-mode queue (``struct queue``): its ring ``[ring_start, ring_end)`` lives in the process's mm.

    ``active`` is false while the process is evicted (the hardware does not run it).
    """

    queue_id: int
    doorbell_id: int
    ring_start: int
    ring_end: int
    active: bool


@dataclass(eq=False)
class KfdProcessDevice:
    """Per-GPU data of a process (``struct kfd_process_device``).

    ``doorbell_ids`` are this GPU's doorbells inside the process's slice, one
    per queue; ``evicted`` counts nested evictions (``qpd->evicted``);
    ``tba_addr`` is the CWSR trap handler mapping in the process (APU), if set
    up. The GPU VM and the buffer objects are not modelled. Guarded by the
    process mutex.
    """

    dev: KfdDevice
    doorbell_ids: Ida
    queues: list[Queue] = field(default_factory=list)
    evicted: int = 0
    tba_addr: int | None = None


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


# -- the module ------------------------------------------------------------------


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
        self.faults = FaultInjector(config.faults)
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
            legacy.kfree(process.mmu_notifier)
        kfree(process)

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
            pfn = _iommu_v2_fault(mm, address, write)
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


def _iommu_v2_fault(mm: MM, address: int, write: bool) -> int | None:
    """``amd_iommu_v2``'s ``do_fault``: resolve a device page request; None for an invalid response."""
    if not mm.mmget_not_zero():
        return None
    try:
        return mm.fault(address, write)
    except BadAddressError:
        return None
    finally:
        mm.mmput()


# -- creation schemes ------------------------------------------------------------


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


class NoSuchProcessError(KernelError):
    """ESRCH: ``alloc_notifier`` found no kfd_process for the mm."""

    errno = errno.ESRCH


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


class SchemeGet(Scheme54):
    """The 2021 conversion to ``mmu_notifier_get`` (Felix Kuehling), with its CWSR clean-up.

    The process is hashed *before* the ``get``, because the driver's
    ``alloc_notifier`` finds it in the table; ``get`` must return the
    notifier embedded in that very process (the kernel's ``BUG_ON``). A CWSR
    failure now undoes the open: unhash, drop the mutex, wait for table
    readers and ``put``, leaving the rest to ``free_notifier``.
    """

    name = "get"

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
