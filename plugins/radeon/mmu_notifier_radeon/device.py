"""The radeon device model: GEM buffer objects, userptr pages in the GTT, fences, command submission.

Models the parts of ``drivers/gpu/drm/radeon`` a userptr BO goes through
(``radeon_gem.c``, ``radeon_ttm.c``, ``radeon_cs.c``, ``radeon_object.c``):

* :class:`RadeonBO` is a GEM object with its TTM state: a userptr BO records
  the address, the owning mm (``gtt->usermm``) and the ioctl flags; while it
  is *bound* its pages are pinned (``get_user_pages`` took a reference on each
  frame) and mapped in the device's :class:`Gtt`. Each BO has a reservation
  (the ww_mutex ``radeon_bo_reserve`` takes) and a ``dma_resv`` with one
  exclusive and any number of shared :class:`Fence`\\ s;
* :class:`Gtt` is the graphics translation table: GTT page -> frame. The
  device's translations of an mm are the GTT entries of that mm's bound
  userptr BOs;
* :class:`GpuRing` executes submissions: a fence signals once the ring took
  ``fence_latency`` scheduling points (a worker task), so an invalidation
  that waits for fences really waits for the GPU;
* :class:`RadeonDevice` holds the ioctls: ``gem_create`` (a VRAM BO, never
  registered), ``gem_userptr`` (``radeon_gem_userptr_ioctl``: flag rules,
  registration, VALIDATE under the mmap read lock), ``cs`` (command
  submission: mmap read lock -> reservations -> validate into GTT, pinning
  with ``get_user_pages``; a fence on every BO) and ``gem_close``
  (``radeon_gem_object_free``: unregister, then TTM frees the pages once the
  BO is idle);
* :class:`Radeon` is the loaded module on one kernel (its devices, its
  scheme and its bookkeeping).

Where it deliberately differs: the kernel pins and binds a userptr BO in
``ttm_tt_populate``/``ttm_tt_bind``; the model does both in :meth:`RadeonDevice.bind_user_pages`.
TTM frees a dead BO's pages from a delayed-destroy worker once it is idle;
the model waits for idleness inline in ``gem_close``. The GPU reads a
submission's pages at submission (the frame an access returns); the fence
only models how long the BO stays busy.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mmu_notifier import MMUIntervalNotifier, sync
from mmu_notifier.errors import (
    AccessDeniedError,
    BadAddressError,
    InvalidArgumentError,
    ModelBug,
    NoMemoryError,
    NoSuchProcessError,
    PermissionDeniedError,
)
from mmu_notifier.log import LOG

if TYPE_CHECKING:
    from mmu_notifier import MM, Kernel
    from mmu_notifier.plugins import MMUNotifierOps
    from mmu_notifier_radeon.config import RadeonConfig
    from mmu_notifier_radeon.radeon_mn import RadeonMN, RadeonMNNode, Scheme

__all__ = [
    "ANONONLY",
    "DOMAIN_CPU",
    "DOMAIN_GTT",
    "READONLY",
    "REGISTER",
    "VALIDATE",
    "AccessDeniedError",
    "Fence",
    "GpuRing",
    "Gtt",
    "KernelOops",
    "NoProcessError",
    "PermissionDeniedError",
    "Radeon",
    "RadeonBO",
    "RadeonBONotifier",
    "RadeonDevice",
    "RadeonFile",
    "Reservation",
]

#: ``RADEON_GEM_USERPTR_READONLY``: the GPU only reads the pages.
READONLY = 1 << 0
#: ``RADEON_GEM_USERPTR_ANONONLY``: refuse anything but private anonymous memory.
ANONONLY = 1 << 1
#: ``RADEON_GEM_USERPTR_VALIDATE``: bind into GTT right away.
VALIDATE = 1 << 2
#: ``RADEON_GEM_USERPTR_REGISTER``: register an mmu notifier for the BO.
REGISTER = 1 << 3
USERPTR_FLAGS = READONLY | ANONONLY | VALIDATE | REGISTER

#: ``RADEON_GEM_DOMAIN_CPU``: system memory, nothing in the GTT.
DOMAIN_CPU = 0x1
#: ``RADEON_GEM_DOMAIN_GTT``: bound in the GTT aperture.
DOMAIN_GTT = 0x2


#: ESRCH: the process owning the mm exited, so nothing can submit on its behalf (the core's
#: :class:`~mmu_notifier.errors.NoSuchProcessError`, under the name earlier releases exported).
#: The core's EPERM (:class:`~mmu_notifier.errors.PermissionDeniedError`: the userptr cannot be pinned, another
#: process or not private anonymous memory) and EACCES (:class:`~mmu_notifier.errors.AccessDeniedError`: a
#: writable userptr without the ANONONLY and REGISTER flags) are re-exported here under their own names.
NoProcessError = NoSuchProcessError


class KernelOops(ModelBug):
    """A NULL pointer dereference in driver code: the kernel oopses (the model raises)."""


def should_fail(kernel: Kernel, site: str) -> bool:
    """Fault injection at ``site`` (``radeon.<what>``, armed with ``kernel.faults.inject``).

    Sites: ``radeon.node_alloc`` (the node kmalloc of registration),
    ``radeon.alloc_notifier`` (the radeon_mn kzalloc), ``radeon.mmap_lock_killable``
    (5.3's ``down_write_killable``), ``radeon.bo_reserve`` and
    ``radeon.bo_validate`` (the invalidation's reserve and validate).
    """
    return kernel.faults.should_fail(site)


_fence_ids = itertools.count(1)


class Fence:
    """A ``radeon_fence`` (a ``dma_fence``): signalled once the GPU finished the submission."""

    __slots__ = ("name", "done")

    def __init__(self, ring: str) -> None:
        self.name = f"{ring}.fence{next(_fence_ids)}"
        self.done = sync.Completion(self.name)

    @property
    def signaled(self) -> bool:
        """``dma_fence_is_signaled``."""
        return self.done.is_done()

    def signal(self) -> None:
        """``dma_fence_signal``: wake every waiter, now and later."""
        self.done.complete_all()

    def wait(self) -> None:
        """``dma_fence_wait`` without a timeout (may sleep)."""
        self.done.wait()

    def __repr__(self) -> str:
        return f"<Fence {self.name} {'signaled' if self.signaled else 'pending'}>"


class Reservation:
    """A BO's reservation: the ww_mutex (``radeon_bo_reserve``) and its ``dma_resv`` fences.

    Adding an exclusive fence replaces every fence (it orders after them);
    shared fences accumulate until they signal. The model's ww_mutex is a
    plain mutex: command submission takes several in a fixed order (by BO
    id), which is what the ww acquire context guarantees without deadlock.
    """

    __slots__ = ("lock", "excl", "shared")

    def __init__(self, name: str) -> None:
        # one lockdep class for every BO's reservation, as reservation_ww_class is in the kernel
        self.lock = sync.Mutex(f"{name}.resv", lock_class="reservation_ww_class_mutex")
        self.excl: Fence | None = None
        self.shared: list[Fence] = []

    def add_fence(self, fence: Fence, write: bool) -> None:
        """``dma_resv_add_excl_fence`` (a write) or ``dma_resv_add_shared_fence``; caller holds the lock."""
        if write:
            self.excl = fence
            self.shared = []
        else:
            self.shared = [f for f in self.shared if not f.signaled] + [fence]

    def fences(self) -> list[Fence]:
        """Every fence now attached (a snapshot, as the RCU reader of ``dma_resv`` takes)."""
        return ([self.excl] if self.excl is not None else []) + list(self.shared)

    def wait_all(self) -> None:
        """``dma_resv_wait_timeout_rcu(resv, wait_all=true, intr=false, MAX_SCHEDULE_TIMEOUT)``."""
        for fence in self.fences():
            fence.wait()

    @property
    def idle(self) -> bool:
        """Every fence signalled."""
        return all(f.signaled for f in self.fences())


class Gtt:
    """The GTT aperture of one device: ``pages`` entries, GTT page -> frame; ranges allocated first fit.

    The kernel's GTT range manager (``ttm_bo_man_get_node``/``_put_node`` around
    ``drm_mm_insert_node_in_range``/``drm_mm_remove_node``) takes the manager's spinlock, so
    every BO of every process allocates and frees ranges of the one aperture atomically. The
    model makes each :meth:`bind` and :meth:`unbind` one indivisible step: the backend's critical
    section, without a scheduling point (nothing in it sleeps, and nobody else sees the
    aperture's bookkeeping half done, so the explorer has no interleaving to try there). On OS
    threads (the main job's threads mode) it is what excludes the other threads: without it two
    binds found the same free range and the second unbind of it raised ``KeyError``, leaving
    the BO's pages pinned.
    """

    def __init__(self, name: str, pages: int) -> None:
        self.name = name
        self.pages = pages
        self.entries: dict[int, int] = {}
        #: allocated ranges: offset -> page count
        self.ranges: dict[int, int] = {}

    def bind(self, frames: list[int]) -> int:
        """Map ``frames`` at a free range of the aperture; returns its first GTT page. ENOMEM when full."""
        count = len(frames)
        with sync.backend().critical():  # the manager's spinlock (see the class docstring)
            cursor = 0
            for offset in sorted(self.ranges):
                if offset - cursor >= count:
                    break
                cursor = offset + self.ranges[offset]
            if cursor + count <= self.pages:
                self.ranges[cursor] = count
                for i, pfn in enumerate(frames):
                    self.entries[cursor + i] = pfn
                return cursor
        raise NoMemoryError(f"{self.name}: no room for {count} page(s) in a {self.pages}-page GTT")

    def unbind(self, offset: int) -> None:
        """Unmap the range bound at ``offset``."""
        with sync.backend().critical():  # the manager's spinlock (see the class docstring)
            count = self.ranges.pop(offset)
            for i in range(count):
                del self.entries[offset + i]


class GpuRing:
    """A ring of the GPU: submissions run in order; each fence signals after ``latency`` scheduling points.

    The ring is a worker task (started when work arrives, gone when the ring
    is idle), so a task waiting on a fence really waits for the GPU; with
    ``latency == 0`` a fence is signalled at submission.
    """

    def __init__(self, name: str, latency: int) -> None:
        self.name = name
        self.latency = latency
        self.lock = sync.SpinLock(f"{name}.lock")
        self.jobs: deque[Fence] = deque()
        self.running = False

    def emit(self) -> Fence:
        """``radeon_fence_emit``: a new fence, signalled when the GPU gets there."""
        fence = Fence(self.name)
        if not self.latency:
            fence.signal()
            return fence
        with self.lock:
            self.jobs.append(fence)
            start = not self.running
            self.running = True
        if start:
            sync.backend().spawn_daemon(self.name, self._execute)
        return fence

    def _execute(self) -> None:
        while True:
            with self.lock:
                if not self.jobs:
                    self.running = False
                    return
                fence = self.jobs.popleft()
            for _ in range(self.latency):
                sync.yield_now()
            fence.signal()


_bo_ids = itertools.count(1)


class RadeonBONotifier(MMUIntervalNotifier):
    """``bo->notifier`` (5.5): the interval notifier embedded in a radeon BO (``container_of`` is :attr:`bo`)."""

    def __init__(self, bo: RadeonBO) -> None:
        super().__init__()
        self.bo = bo


class RadeonBO:
    """A ``radeon_bo`` and its TTM state; a userptr BO also carries its ``radeon_ttm_tt`` userptr fields.

    Guarded by the reservation: ``bound``, ``pages``, ``gtt_offset``,
    ``domain``. Guarded by the owning ``radeon_mn``'s lock: ``mn_node``
    (the node whose ``bos`` list holds it). ``mn`` is written by
    registration and unregistration only.
    """

    def __init__(self, rdev: RadeonDevice, size: int, userptr: int | None = None, usermm: MM | None = None,
                 userflags: int = 0) -> None:
        self.id = next(_bo_ids)
        self.rdev = rdev
        self.size = size
        self.npages = size // rdev.page_size
        self.userptr = userptr
        self.usermm = usermm
        self.userflags = userflags
        self.resv = Reservation(f"bo{self.id}")
        self.domain = DOMAIN_CPU
        self.bound = False
        self.pages: list[int] = []
        self.gtt_offset = -1
        #: the ``radeon_mn`` this BO is registered with (``bo->mn``), None if not registered
        self.mn: RadeonMN | None = None
        self.mn_node: RadeonMNNode | None = None
        #: 5.5: ``bo->notifier``, the BO's interval notifier (its ``mm`` is set while registered)
        self.notifier = RadeonBONotifier(self)
        self.freed = False

    @property
    def is_userptr(self) -> bool:
        """``radeon_ttm_tt_has_userptr``."""
        return self.userptr is not None

    @property
    def last(self) -> int:
        """The BO's last user address (inclusive), as registration computes it."""
        assert self.userptr is not None
        return self.userptr + self.size - 1

    def frame_at(self, address: int) -> int | None:
        """The frame the GTT maps for ``address`` of the user range, if bound."""
        if not self.bound or self.userptr is None or not self.userptr <= address <= self.last:
            return None
        return self.pages[(address - self.userptr) // self.rdev.page_size]

    def __repr__(self) -> str:
        where = f" userptr={self.userptr:#x}+{self.size:#x}" if self.userptr is not None else ""
        return f"<RadeonBO {self.id}{where} {'bound' if self.bound else 'unbound'}>"


class RadeonFile:
    """An open DRM file of a radeon device (``struct drm_file``): GEM handles of one process.

    ``table_lock`` guards ``handles`` (the kernel's ``object_idr``): every
    lookup, insertion and removal of a handle happens under it, so a thread
    that looks a handle up while another closes it gets the object or "no such
    handle", never half of a removal.
    """

    def __init__(self, rdev: RadeonDevice, mm: MM) -> None:
        self.rdev = rdev
        self.mm = mm
        self.handles: dict[int, RadeonBO] = {}
        self.table_lock = sync.SpinLock("drm_file.table_lock")
        self._next = itertools.count(1)
        self.closed = False

    def add(self, bo: RadeonBO) -> int:
        """``drm_gem_handle_create``: a new handle for ``bo``, under ``table_lock``."""
        with self.table_lock:
            handle = next(self._next)
            self.handles[handle] = bo
        return handle

    def find(self, handle: int) -> RadeonBO | None:
        """``drm_gem_object_lookup``: the object of ``handle`` under ``table_lock``, or None."""
        with self.table_lock:
            return self.handles.get(handle)

    def lookup(self, handle: int) -> RadeonBO:
        """``drm_gem_object_lookup``: EINVAL (ENOENT in the kernel) for an unknown handle."""
        bo = self.find(handle)
        if bo is None:
            raise InvalidArgumentError(f"radeon file of mm {self.mm.id}: no GEM handle {handle}")
        return bo

    def remove(self, handle: int) -> RadeonBO:
        """``drm_gem_handle_delete``: take ``handle`` out of the table under ``table_lock``."""
        with self.table_lock:
            bo = self.handles.pop(handle, None)
        if bo is None:
            raise InvalidArgumentError(f"radeon file of mm {self.mm.id}: no GEM handle {handle}")
        return bo


def _get_user_page(mm: MM, addr: int, write: bool) -> int:
    """One page of ``get_user_pages``: fault it in, then take the reference under the page-table lock.

    As ``__get_user_pages`` does (``follow_page_mask`` takes the page
    reference under the PTE lock, ``faultin_page`` on a miss), a page zapped
    between the fault and the reference is simply faulted in again.
    """
    vpn = addr >> mm.page_shift
    while True:
        pfn = mm.handle_mm_fault(addr, write)
        with mm.page_table_lock:
            pte = mm.page_table.lookup(vpn)
            if pte is not None and pte.pfn == pfn and (pte.writable or not write):
                mm.kernel.memory.get(pfn)
                return pfn


class RadeonDevice:
    """One radeon GPU (``struct radeon_device``) with its GTT, its ring and, in 5.3, its ``radeon_mn`` hash."""

    def __init__(self, module: Radeon, index: int) -> None:
        self.module = module
        self.index = index
        self.name = f"radeon{index}"
        self.page_size = module.kernel.page_size
        self.gtt = Gtt(f"{self.name}.gtt", module.config.gtt_pages)
        self.ring = GpuRing(f"{self.name}.gfx", module.config.fence_latency)
        #: 5.3 only: ``rdev->mn_lock`` and ``rdev->mn_hash`` (keyed by mm); patch 08 deleted both
        self.mn_lock = sync.Mutex(f"{self.name}.mn_lock")
        self.mn_hash: dict[MM, RadeonMN] = {}
        #: every BO of the device, oldest first (a dict: a free is O(1) at any scale)
        self.bos: dict[RadeonBO, None] = {}
        #: the userptr BOs of each mm (a model-side index, not in the kernel): :meth:`translations` of one
        #: mm costs O(that mm's BOs), not O(every BO of the device)
        self.bos_of_mm: dict[MM, dict[RadeonBO, None]] = {}

    # -- files -------------------------------------------------------------------
    def open(self, mm: MM) -> RadeonFile:
        """``open("/dev/dri/cardN")`` by a process whose mm is ``mm``."""
        file = RadeonFile(self, mm)
        self.module.files[file] = None
        return file

    def close(self, file: RadeonFile) -> None:
        """The last close of the file: every GEM handle is deleted (``drm_gem_release``)."""
        for handle in list(file.handles):
            self.gem_close(file, handle)
        file.closed = True
        self.module.files.pop(file, None)

    # -- ioctls ------------------------------------------------------------------
    def gem_create(self, file: RadeonFile, size: int) -> int:
        """``radeon_gem_create_ioctl``: a plain (VRAM) BO; never registered with any notifier."""
        if size <= 0 or size % self.page_size:
            raise InvalidArgumentError(f"{self.name}: BO size {size:#x} is not a positive number of pages")
        bo = RadeonBO(self, size)
        self.bos[bo] = None
        self.module.stat("bo_create")
        return file.add(bo)

    def gem_userptr(self, file: RadeonFile, addr: int, size: int, flags: int) -> int:
        """``radeon_gem_userptr_ioctl``: a BO backed by the caller's memory ``[addr, addr+size)``.

        Checks in the kernel's order: page alignment, unknown flags, then
        READONLY needs R600+, and a writable BO needs both ANONONLY and
        REGISTER (EACCES). Then the BO is created, registered (REGISTER) and
        bound now under the mmap read lock (VALIDATE). A failure after the
        BO exists drops it through the normal free path, whose unregister is
        a no-op for a BO that never got ``bo->mn``.
        """
        mm = file.mm
        if addr % self.page_size or size % self.page_size or size <= 0:
            raise InvalidArgumentError(f"{self.name}: userptr {addr:#x}+{size:#x} is not page aligned")
        if flags & ~USERPTR_FLAGS:
            raise InvalidArgumentError(f"{self.name}: unknown userptr flags {flags & ~USERPTR_FLAGS:#x}")
        if flags & READONLY:
            if not self.module.config.r600:
                raise InvalidArgumentError(f"{self.name}: read-only userptrs need an R600 or newer GPU")
        elif not (flags & ANONONLY and flags & REGISTER):
            raise AccessDeniedError(f"{self.name}: a writable userptr needs the ANONONLY and REGISTER flags")
        bo = RadeonBO(self, size, addr, mm, flags)
        self.bos[bo] = None
        self.bos_of_mm.setdefault(mm, {})[bo] = None
        self.module.stat("bo_create")
        handle = file.add(bo)
        try:
            if flags & REGISTER:
                self.module.scheme.register(self, bo, addr, mm)
            if flags & VALIDATE:
                self._validate_now(bo, mm)
        except BaseException:
            self.gem_close(file, handle)
            raise
        if LOG.on:
            LOG.event("radeon.userptr", device=self.name, mm=mm.id, bo=bo.id, addr=addr, size=size, flags=flags)
        return handle

    def _validate_now(self, bo: RadeonBO, mm: MM) -> None:
        """The VALIDATE flag: mmap read lock, reserve, placement GTT, validate, unreserve."""
        mm.mmap_lock.down_read()
        try:
            self.bo_reserve(bo)
            try:
                self.ttm_bo_validate(bo, DOMAIN_GTT, mm)
            finally:
                self.bo_unreserve(bo)
        finally:
            mm.mmap_lock.up_read()

    def cs(self, file: RadeonFile, relocs: Iterable[tuple[int, bool]]) -> Fence:
        """``radeon_cs_ioctl``: submit a job using the BOs ``(handle, write)``; returns its fence.

        With a userptr BO in the list the mmap read lock is taken first (the
        kernel's ``need_mmap_lock``); every BO is reserved (in BO id order,
        the model of the ww acquire context), validated into GTT (a userptr
        BO an invalidation moved out is pinned again with
        ``get_user_pages``), fenced (exclusive for a write, shared for a
        read), and unreserved.
        """
        mm = file.mm
        looked_up = [(file.lookup(h), w) for h, w in relocs]
        bos = sorted({bo.id: (bo, w) for bo, w in looked_up}.values(), key=lambda p: p[0].id)
        need_mmap_lock = any(bo.is_userptr for bo, _ in bos)
        if need_mmap_lock:
            mm.mmap_lock.down_read()
        reserved: list[RadeonBO] = []
        try:
            for bo, write in bos:
                if write and bo.userflags & READONLY:
                    raise BadAddressError(f"{self.name}: a write to read-only userptr {bo!r}")
                self.bo_reserve(bo)
                reserved.append(bo)
            for bo, _ in bos:
                self.ttm_bo_validate(bo, DOMAIN_GTT, mm)
            fence = self.ring.emit()
            for bo, write in bos:
                bo.resv.add_fence(fence, write)
        finally:
            for bo in reserved:
                self.bo_unreserve(bo)
            if need_mmap_lock:
                mm.mmap_lock.up_read()
        self.module.stat("cs")
        return fence

    def gem_close(self, file: RadeonFile, handle: int) -> None:
        """``drm_gem_handle_delete`` of the last reference: ``radeon_gem_object_free``.

        The free unregisters *every* GEM object from the notifier (userptr
        or not: that is why the guard exists), then TTM releases the BO:
        once it is idle its user pages are unbound and unpinned.
        """
        bo = file.remove(handle)
        self.module.scheme.unregister(self, bo)
        self.bo_reserve(bo)
        try:
            bo.resv.wait_all()
            if bo.bound:
                self._unbind_user_pages(bo)
            bo.domain = DOMAIN_CPU
        finally:
            self.bo_unreserve(bo)
        bo.freed = True
        del self.bos[bo]
        if bo.usermm is not None:
            of_mm = self.bos_of_mm[bo.usermm]
            del of_mm[bo]
            if not of_mm:
                del self.bos_of_mm[bo.usermm]
        self.module.scheme.free_bo(bo)
        self.module.stat("bo_free")

    # -- reservation and validation ---------------------------------------------
    def bo_reserve(self, bo: RadeonBO) -> None:
        """``radeon_bo_reserve(bo, no_intr=true)``: take the BO's reservation (may sleep)."""
        bo.resv.lock.lock()

    def bo_unreserve(self, bo: RadeonBO) -> None:
        """``radeon_bo_unreserve``."""
        bo.resv.lock.unlock()

    def ttm_bo_validate(self, bo: RadeonBO, domain: int, mm: MM | None = None) -> None:
        """``radeon_ttm_placement_from_domain`` + ``ttm_bo_validate``; the caller holds the reservation.

        GTT: bind a userptr BO's pages (pinning them) unless already bound.
        CPU: unbind from the GTT and unpin. Raises :class:`KernelError` on
        failure (fault site ``radeon.bo_validate``); the BO is then unchanged.
        """
        if should_fail(self.module.kernel, "radeon.bo_validate"):
            raise NoMemoryError(f"{self.name}: ttm_bo_validate of {bo!r} failed (injected)")
        if domain == DOMAIN_GTT:
            if not bo.bound and bo.is_userptr:
                assert mm is not None
                self.bind_user_pages(bo, mm)
            bo.domain = DOMAIN_GTT
        else:
            if bo.bound:
                self._unbind_user_pages(bo)
            bo.domain = DOMAIN_CPU

    def bind_user_pages(self, bo: RadeonBO, mm: MM) -> None:
        """``radeon_ttm_tt_pin_userptr`` + ``radeon_ttm_backend_bind``: pin with gup, map in the GTT.

        The caller holds ``mm``'s mmap lock (read) and the reservation. EPERM
        when ``mm`` is not the BO's (``current->mm != gtt->usermm``) or, with
        ANONONLY, when the first VMA ending above the address is a shared
        mapping or ends before the BO does; EFAULT when a page cannot be
        faulted in (write for a writable BO).
        """
        if mm is not bo.usermm:
            raise PermissionDeniedError(f"{self.name}: {bo!r} belongs to another process")
        assert bo.userptr is not None
        start, end = bo.userptr, bo.userptr + bo.size
        if bo.userflags & ANONONLY:
            vma = next((v for v in mm.vmas if v.end > start), None)
            if vma is None or vma.shared or vma.end < end:
                raise PermissionDeniedError(f"{self.name}: {bo!r} is not inside one private anonymous mapping")
        write = not bo.userflags & READONLY
        memory = mm.kernel.memory
        pinned: list[int] = []
        try:
            for addr in range(start, end, self.page_size):
                pinned.append(_get_user_page(mm, addr, write))
            offset = self.gtt.bind(pinned)
        except BaseException:
            for pfn in pinned:
                memory.put(pfn)
            raise
        bo.pages = pinned
        bo.gtt_offset = offset
        bo.bound = True
        self.module.stat("bind")
        if LOG.on:
            LOG.event("radeon.bind", device=self.name, bo=bo.id, mm=mm.id, pages=len(pinned))

    def _unbind_user_pages(self, bo: RadeonBO) -> None:
        """``radeon_ttm_backend_unbind`` + ``radeon_ttm_tt_unpin_userptr``: unmap from the GTT, drop the pins."""
        self.gtt.unbind(bo.gtt_offset)
        assert bo.usermm is not None
        memory = bo.usermm.kernel.memory
        for pfn in bo.pages:
            memory.put(pfn)
        bo.pages = []
        bo.gtt_offset = -1
        bo.bound = False
        self.module.stat("unbind")
        if LOG.on:
            LOG.event("radeon.unbind", device=self.name, bo=bo.id)

    # -- what the GPU can reach --------------------------------------------------
    def translations(self, mm: MM) -> dict[int, int]:
        """Every GTT translation of ``mm``'s pages on this device: virtual page -> frame.

        Overlapping BOs translate shared pages too; where they disagree, the
        frame the CPU page table does not map there is kept (the stale one).
        The mm's BOs are copied first, in one C call: on OS threads (the main job's threads mode) a check of the
        mm may run on another thread while the process itself creates and frees BOs, and iterating the live
        dict there raised "dictionary changed size during iteration".
        """
        out: dict[int, int] = {}
        shift = mm.page_shift
        entries = mm.page_table.entries
        for bo in list(self.bos_of_mm.get(mm, ())):
            if bo.bound and bo.usermm is mm:
                assert bo.userptr is not None
                for i, pfn in enumerate(bo.pages):
                    vpn = (bo.userptr >> shift) + i
                    if out.get(vpn, pfn) != pfn:
                        pte = entries.get(vpn)
                        if pte is not None and pte.pfn == pfn:
                            continue
                    out[vpn] = pfn
        return out


class Radeon:
    """The radeon module loaded on one kernel: its devices, the registration scheme, the open files.

    ``rmns`` records every live ``radeon_mn`` with where it was allocated
    (the model's kmemleak for them); ``stats`` counts events for tests.
    """

    def __init__(self, kernel: Kernel, driver: Any, ops: MMUNotifierOps, config: RadeonConfig, scheme: Scheme) -> None:
        self.kernel = kernel
        self.driver = driver
        self.ops = ops
        self.config = config
        self.scheme = scheme
        self.devices = [RadeonDevice(self, i) for i in range(config.devices)]
        #: the open files, oldest first (a dict: a close is O(1) at any scale)
        self.files: dict[RadeonFile, None] = {}
        self.rmns: dict[int, str] = {}
        self.stats: Counter[str] = Counter()

    def stat(self, what: str) -> None:
        """Count one event."""
        self.stats[what] += 1

    def translations(self, mm: MM) -> dict[int, int]:
        """Every device's GTT translations of ``mm`` as one dict.

        Where two devices (or two BOs) translate one page to different
        frames, the one the CPU page table does not map there is kept, so
        that a coherence check sees the stale translation.
        """
        out: dict[int, int] = {}
        for rdev in self.devices:
            for vpn, pfn in rdev.translations(mm).items():
                if out.get(vpn, pfn) != pfn:
                    pte = mm.page_table.entries.get(vpn)
                    if pte is not None and pte.pfn == pfn:
                        continue
                out[vpn] = pfn
        return out

    def radeon_exit(self) -> None:
        """Module exit (``radeon_exit``): every file is closed first (the module is pinned while one is open)."""
        for file in list(self.files):
            file.rdev.close(file)
        self.scheme.module_exit(self)
