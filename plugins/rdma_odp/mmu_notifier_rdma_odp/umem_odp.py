"""The ODP core of Linux 5.4: ``ib_ucontext_per_mm`` and ``ib_umem_odp`` (``drivers/infiniband/core/umem_odp.c``).

After patches 06 and 07 of the get/put series there is **one**
:class:`IbUcontextPerMm` per mm for the whole RDMA stack: the subscription
``mmu_notifier_get`` returns for the single ``ib_umem_notifiers`` ops table,
shared by every verbs context (ucontext) and every device. It holds

* ``umem_tree``: an interval tree of the mm's ODP umems keyed by
  ``[start, last]`` (explicit MRs and implicit children; implicit parents
  are never in it), written under ``umem_rwsem`` for write;
* ``umem_rwsem``: also held **for read from every invalidation start to its
  end**, which is what makes creating or destroying a umem wait for the
  invalidations in flight (and what deadlocks with a nested start, bug H-1);
* ``tgid``: the pid of the process that created it, used by the fault path
  to find a task for ``get_user_pages_remote``.

``users`` (the core's) counts the umems between :func:`ib_init_umem_odp` and
their put. It changes only under ``umem_rwsem`` for write, so an invalidation
start and its end see the same value; ``users == 0`` in a callback means the
subscription is dead (its last put ran) and the callback does nothing.

An :class:`IbUmemOdp` has a page list and a DMA list (the DMA list entry
carries the read/write access bits), ``umem_mutex`` guarding both and the
counters, ``notifiers_count`` (invalidations in flight on it),
``notifiers_seq`` (bumped by every invalidation end) and a completion re-armed
on the 0->1 edge and completed on 1->0, which retried faults wait on.

Deliberate differences: the DMA address of a page is its frame number; the
lists are dicts indexed by page (a sparse array); ``get_user_pages_remote``
is ``handle_mm_fault`` under the mmap lock for read. Pages are pinned
(``get_page``) while in the page list, as gup pins them.
"""

from __future__ import annotations

import errno
from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from mmu_notifier import (
    MM,
    BadAddressError,
    InvalidArgumentError,
    MisuseError,
    MMUNotifier,
    Range,
    get,
    put,
    sync,
)
from mmu_notifier.itree import IntervalTree
from mmu_notifier.kmem import kfree
from mmu_notifier.log import LOG

if TYPE_CHECKING:
    from mmu_notifier_rdma_odp.config import RdmaOdpConfig

EAGAIN = -errno.EAGAIN
#: ``ODP_READ_ALLOWED_BIT`` / ``ODP_WRITE_ALLOWED_BIT`` of a DMA list entry.
ODP_READ_ALLOWED_BIT = 1 << 0
ODP_WRITE_ALLOWED_BIT = 1 << 1
ODP_ACCESS_MASK = ODP_READ_ALLOWED_BIT | ODP_WRITE_ALLOWED_BIT


class IbDevice(Protocol):
    """What the ODP core needs of a device (``struct ib_device`` and its ``invalidate_range`` op)."""

    name: str

    def invalidate_range(self, umem: IbUmemOdp, start: int, end: int) -> None:
        """Zap the device's translations of ``umem`` in ``[start, end)`` and unmap its DMA pages there."""
        ...


class Pid:
    """``struct pid`` of a process's group leader (what ``per_mm->tgid`` holds).

    ``get_pid_task`` fails once the process exited, even while other users
    keep its mm alive. ``mm`` is ``None`` for a kernel thread (a work queue).
    """

    def __init__(self, mm: MM | None, name: str) -> None:
        self.mm = mm
        self.name = name
        self.exited = False
        self.refs = 1

    def get_pid_task(self) -> bool:
        """True if a task is still attached to the pid."""
        return not self.exited

    def put_pid(self) -> None:
        """Drop a reference taken with ``get_task_pid``."""
        if self.refs <= 0:
            raise MisuseError(f"put_pid of {self.name} with no reference left")
        self.refs -= 1

    def __repr__(self) -> str:
        return f"<Pid {self.name} exited={self.exited}>"


class Owner(Protocol):
    """The driver as the ODP core sees it: config, counters, the scheme, the "current process"."""

    config: RdmaOdpConfig
    stats: Counter[str]

    def current_pid(self, mm: MM) -> Pid | None:
        """The pid of the process whose ``mm`` the running task belongs to (``current->group_leader``)."""
        ...


class IbUcontextPerMm(MMUNotifier):
    """``struct ib_ucontext_per_mm`` (5.4): the per-mm ODP state, shared by every ucontext and device.

    The 5.3 object (:class:`mmu_notifier_rdma_odp.legacy.LegacyPerMm`) adds the
    ``active`` flag the callbacks test instead of ``users``.
    """

    def __init__(self, owner: Owner, tgid: Pid) -> None:
        super().__init__()
        self.owner = owner
        self.umem_tree: IntervalTree[IbUmemOdp] = IntervalTree("ib_ucontext_per_mm.umem_tree")
        self.umem_rwsem = sync.RWSemaphore("ib_ucontext_per_mm.umem_rwsem")
        self.tgid = tgid

    def live(self) -> bool:
        """The callbacks' liveness test: ``mn.users`` non-zero (5.4)."""
        return self.users != 0

    # -- mmu_notifier callbacks ---------------------------------------------------
    def invalidate_range_start(self, range: Range) -> int:
        """``ib_umem_notifier_invalidate_range_start``.

        Takes ``umem_rwsem`` for read (a trylock for a non-blockable range:
        refused if a writer holds *or waits for* it), and keeps it until the
        end. A dead subscription returns at once without the lock (the end
        sees the same ``users`` and skips its unlock). A non-blockable range
        is refused at the first overlapping umem, before any umem is touched
        (all or nothing); every refusal drops the lock, unless
        ``bug_missed_unlock`` puts bug H-2 back. Otherwise every overlapping
        umem is counted (:func:`start_account`) and its device zaps it.
        """
        if range.blockable:
            self.umem_rwsem.down_read()
        elif not self.umem_rwsem.down_read_trylock():
            return EAGAIN
        if not self.live():
            self.umem_rwsem.up_read()
            return 0
        last = range.end - 1
        overlapping = list(self.umem_tree.iter_overlap(range.start, last))
        if overlapping and not range.blockable:
            if not self.owner.config.bug_missed_unlock:
                self.umem_rwsem.up_read()
            if LOG.on:
                LOG.event("rdma_odp.start_refused", mm=range.mm.id, start=range.start, end=range.end)
            return EAGAIN
        for umem in overlapping:
            start_account(umem)
            umem.ibdev.invalidate_range(umem, range.start, range.end)
        return 0

    def invalidate_range_end(self, range: Range) -> None:
        """``ib_umem_notifier_invalidate_range_end``: uncount each overlapping umem, then drop the read lock."""
        if not self.live():
            return
        for umem in self.umem_tree.iter_overlap(range.start, range.end - 1):
            end_account(umem)
        self.umem_rwsem.up_read()

    def release(self) -> None:
        """``ib_umem_notifier_release``: block every umem for good and wake its waiters.

        Each umem of the tree gets a ``start_account`` that no end will match,
        then ``complete_all`` so a fault waiting on it wakes and sees the
        count raised, then the device invalidates the whole umem.
        """
        self.umem_rwsem.down_read()
        try:
            if not self.live():
                return
            for umem in self.umem_tree:
                start_account(umem)
                umem.notifier_completion.complete_all()
                umem.ibdev.invalidate_range(umem, umem.start, umem.end)
        finally:
            self.umem_rwsem.up_read()

    def free(self) -> None:
        """``ib_umem_free_notifier`` (atomic context): WARN if umems are left, ``put_pid``."""
        if len(self.umem_tree):
            assert self.mm is not None
            self.mm.kernel.warn(f"ib_ucontext_per_mm of mm {self.mm.id} freed with {len(self.umem_tree)} umem(s)")
        self.tgid.put_pid()
        self.owner.stats["per_mm_free"] += 1


class IbUmemOdp:
    """``struct ib_umem_odp``: one ODP memory region (explicit, implicit parent or implicit child).

    ``start``/``last`` are the inclusive interval of the tree node; they never
    change while the umem is in a tree. ``private`` is the device's MR.
    """

    def __init__(
        self, ibdev: IbDevice, owning_mm: MM, start: int, length: int, *, writable: bool, implicit: bool = False
    ) -> None:
        if length <= 0 or start < 0 or start % owning_mm.page_size:
            raise InvalidArgumentError(f"ODP umem [{start:#x}, +{length:#x}) is not a page-aligned, non-empty range")
        self.ibdev = ibdev
        self.owning_mm = owning_mm
        self.page_shift = owning_mm.page_shift
        self.start = start
        self.end = start + -(-length // owning_mm.page_size) * owning_mm.page_size
        self.last = self.end - 1
        self.writable = writable
        self.is_implicit_odp = implicit
        self.per_mm: IbUcontextPerMm | None = None
        #: the verbs context that registered it: 5.3's ``umem->context`` (patch 07 keeps only ``ibdev``;
        #: the 5.4 scheme never reads it)
        self.context: Any = None
        #: page index -> frame (``page_list``) and -> frame << 2 | access bits (``dma_list``)
        self.page_list: dict[int, int] = {}
        self.dma_list: dict[int, int] = {}
        self.npages = 0
        mutex_class = "ib_umem_odp.umem_mutex(implicit parent)" if implicit else "ib_umem_odp.umem_mutex"
        self.umem_mutex = sync.Mutex(mutex_class)
        self.notifiers_seq = 0
        self.notifiers_count = 0
        self.notifier_completion = sync.Completion("ib_umem_odp.notifier_completion")
        #: implicit child: marked dying once its leaf free is queued
        self.dying = False
        #: the device's MR (``umem_odp->private``)
        self.private: Any = None
        #: implicit child: its leaf-free work (``umem_odp->work``)
        self.work: Any = None
        #: pages written back dirty on unmap (``set_page_dirty``)
        self.dirtied = 0

    def index(self, address: int) -> int:
        """Page index of ``address`` in the lists."""
        return (address - self.start) >> self.page_shift

    def __repr__(self) -> str:
        kind = "implicit" if self.is_implicit_odp else "umem"
        return f"<IbUmemOdp {kind} [{self.start:#x}, {self.last:#x}] npages={self.npages}>"


# -- the per-umem accounting ---------------------------------------------------------


def start_account(umem: IbUmemOdp) -> None:
    """``ib_umem_notifier_start_account``: count the invalidation; the first re-arms the completion."""
    with umem.umem_mutex:
        umem.notifiers_count += 1
        if umem.notifiers_count == 1:
            umem.notifier_completion.reinit()


def end_account(umem: IbUmemOdp) -> None:
    """``ib_umem_notifier_end_account``: bump the sequence, uncount; the last completes the completion."""
    with umem.umem_mutex:
        umem.notifiers_seq += 1
        umem.notifiers_count -= 1
        if umem.notifiers_count == 0:
            umem.notifier_completion.complete_all()


def mmu_notifier_retry(umem: IbUmemOdp, mmu_seq: int) -> bool:
    """``ib_umem_mmu_notifier_retry``: an invalidation is in flight or ended since ``mmu_seq``.

    Reliable only under ``umem_mutex``.
    """
    return umem.notifiers_count != 0 or umem.notifiers_seq != mmu_seq


# -- DMA mapping ----------------------------------------------------------------------


def map_dma_pages(umem: IbUmemOdp, user_virt: int, bcnt: int, write: bool, current_seq: int) -> int:
    """``ib_umem_odp_map_dma_pages``: fault the pages in and store each unless an invalidation raced.

    Finds the owning task through ``per_mm->tgid`` and pins the mm with
    ``mmget_not_zero``; either failing is ``EINVAL`` (the owner exited).
    Pages are faulted in under the mmap lock for read (gup), then stored
    one by one under ``umem_mutex`` only while :func:`mmu_notifier_retry`
    is false for ``current_seq``. Returns the number of pages stored, or
    ``-EAGAIN`` when the first one was refused; raises
    :class:`BadAddressError` where the CPU cannot fault the page in.
    """
    per_mm = umem.per_mm
    assert per_mm is not None
    if user_virt < umem.start or user_virt + bcnt > umem.end:
        raise InvalidArgumentError(f"{umem!r}: [{user_virt:#x}, +{bcnt:#x}) is outside the umem")
    mm = umem.owning_mm
    if not per_mm.tgid.get_pid_task() or not mm.mmget_not_zero():
        raise InvalidArgumentError(f"ODP fault on mm {mm.id}: its owning process exited (EINVAL)")
    access = ODP_READ_ALLOWED_BIT | (ODP_WRITE_ALLOWED_BIT if write else 0)
    if write and not umem.writable:
        mm.mmput()
        raise InvalidArgumentError(f"{umem!r}: write fault on a read-only MR")
    memory = mm.kernel.memory
    page = mm.page_size
    first = user_virt & ~(page - 1)
    stored = 0
    try:
        pages: list[int] = []
        mm.mmap_lock.down_read()
        try:
            for address in range(first, user_virt + bcnt, page):
                pages.append(_follow_page(mm, address, write))
        finally:
            mm.mmap_lock.up_read()
        with umem.umem_mutex:
            for offset, pfn in enumerate(pages):
                if mmu_notifier_retry(umem, current_seq):
                    for unused in pages[offset:]:
                        memory.put(unused)
                    return EAGAIN
                index = umem.index(first) + offset
                old = umem.page_list.get(index)
                if old is None:
                    umem.page_list[index] = pfn
                    umem.dma_list[index] = (pfn << 2) | access
                    umem.npages += 1
                    stored += 1
                    continue
                if old == pfn:
                    umem.dma_list[index] |= access
                    stored += 1
                else:
                    # 5.4 logs and calls a broken debugging invalidate here (H-5); no
                    # correct model reaches it: an invalidation always unmaps first.
                    mm.kernel.warn(f"{umem!r}: page {index} remapped from frame {old} to {pfn} without invalidation")
                memory.put(pfn)
    finally:
        mm.mmput()
    return stored


def _follow_page(mm: MM, address: int, write: bool) -> int:
    """gup's loop for one page: pin the mapped frame under the page-table lock, else fault it in and look again."""
    vpn = address >> mm.page_shift
    while True:
        with mm.page_table_lock:
            pte = mm.page_table.lookup(vpn)
            if pte is not None and (pte.writable or not write):
                mm.kernel.memory.get(pte.pfn)
                return pte.pfn
        mm.handle_mm_fault(address, write)


def unmap_dma_pages(umem: IbUmemOdp, virt: int, bound: int, *, take_lock: bool = False) -> None:
    """``ib_umem_odp_unmap_dma_pages``: drop every mapped page of ``[virt, bound)``; dirty the writable ones.

    The caller holds ``umem_mutex`` (5.4 after "Lift umem_mutex out of
    ib_umem_odp_unmap_dma_pages()"); ``take_lock`` is the older function
    that took it itself.
    """
    if take_lock:
        with umem.umem_mutex:
            unmap_dma_pages(umem, virt, bound)
        return
    if not umem.umem_mutex.held_by_current():
        raise MisuseError(f"unmap_dma_pages of {umem!r} without its umem_mutex held (lockdep_assert_held)")
    memory = umem.owning_mm.kernel.memory
    virt, bound = max(virt, umem.start), min(bound, umem.end)
    if bound <= virt:
        return
    first, stop = umem.index(virt), umem.index(bound)
    for index in sorted(i for i in umem.page_list if first <= i < stop):  # a sparse walk of the page list
        pfn = umem.page_list.pop(index)
        dma = umem.dma_list.pop(index)
        if dma & ODP_WRITE_ALLOWED_BIT:
            umem.dirtied += 1
        memory.put(pfn)
        umem.npages -= 1


# -- life cycle -------------------------------------------------------------------------


class PerMmScheme(Protocol):
    """How a umem joins and leaves its per-mm object: 5.4's get/put, or 5.3's per-ucontext list."""

    def init_umem(self, umem: IbUmemOdp, context: Any, parent: IbUmemOdp | None) -> None:
        """Give ``umem`` its per_mm (and insert it into the tree unless it is an implicit parent)."""
        ...

    def release_umem(self, umem: IbUmemOdp) -> None:
        """Take ``umem`` out of its tree and drop its per_mm reference."""
        ...


class GetPutScheme:
    """Linux 5.4: ``ib_init_umem_odp`` gets the one per_mm of the mm; release puts it under ``umem_rwsem``."""

    #: the members of ``ib_umem_notifiers`` this build fills
    ops: ClassVar[frozenset[str]] = frozenset(
        {"alloc_notifier", "free_notifier", "release", "invalidate_range_start", "invalidate_range_end"}
    )
    version: ClassVar[str] = "5.4"

    def __init__(self, owner: Owner) -> None:
        self.owner = owner

    def init_umem(self, umem: IbUmemOdp, context: Any, parent: IbUmemOdp | None) -> None:
        """``ib_init_umem_odp``'s per-mm part: ``mmu_notifier_get``, then the tree insert under the write lock.

        The get and the insert are two separate sections: between them the
        umem counts in ``users`` but is not in the tree yet.
        """
        per_mm = get(self.owner, umem.owning_mm)
        assert isinstance(per_mm, IbUcontextPerMm)
        umem.per_mm = per_mm
        if not umem.is_implicit_odp:
            per_mm.umem_rwsem.down_write()
            per_mm.umem_tree.insert(umem)
            per_mm.umem_rwsem.up_write()

    def release_umem(self, umem: IbUmemOdp) -> None:
        """The tail of ``ib_umem_odp_release``: under ``umem_rwsem`` for write remove, complete, put.

        The put happens while the write lock is held, so ``users`` changes
        only while no invalidation is between its start and its end.
        ``bug_put_outside_rwsem`` (H-6, a counterfactual) puts after the unlock.

        Deliberate difference: the kernel's ``up_write`` after the put touches
        the per_mm after ``call_srcu`` queued its free, safe only while the
        grace period outlasts the unlock; the model holds a read section of
        the notifier SRCU across put and unlock so that the free cannot come
        first. ``literal_release_tail`` drops it, and the explorer then shows
        the window (a use after free of ``umem_rwsem``; reading, no commit).
        """
        per_mm = umem.per_mm
        assert per_mm is not None
        per_mm.umem_rwsem.down_write()
        if not umem.is_implicit_odp:
            per_mm.umem_tree.remove(umem)
            umem.notifier_completion.complete_all()
        if self.owner.config.bug_put_outside_rwsem:
            per_mm.umem_rwsem.up_write()
            put(per_mm)
            return
        if self.owner.config.literal_release_tail:
            put(per_mm)
            sync.yield_now()  # the task may be preempted between the put and the unlock
            per_mm.umem_rwsem.up_write()
            return
        # 5.4 writes put, then up_write, and relies on the SRCU grace period
        # outlasting the unlock; the read section makes that explicit.
        srcu = umem.owning_mm.kernel.srcu
        index = srcu.read_lock()
        put(per_mm)
        sync.yield_now()
        per_mm.umem_rwsem.up_write()
        srcu.read_unlock(index)


def ib_init_umem_odp(owner: Owner, scheme: PerMmScheme, umem: IbUmemOdp, context: Any,
                     parent: IbUmemOdp | None = None) -> None:
    """``ib_init_umem_odp``: join the per-mm object, then pin the owning mm (``mmgrab``)."""
    scheme.init_umem(umem, context, parent)
    umem.owning_mm.mmgrab()
    owner.stats["umem_alloc"] += 1


def alloc_child(owner: Owner, scheme: PerMmScheme, root: IbUmemOdp, address: int, size: int,
                context: Any) -> IbUmemOdp:
    """``ib_umem_odp_alloc_child``: a child of the implicit ``root`` over ``[address, address + size)``.

    Runs from the page-fault path (no process context). The fixed form pins
    the mm with ``mmget_not_zero`` first and fails with ``EFAULT`` once the
    owner's mm exited; ``bug_child_without_mmget`` (H-3, 5.4 as shipped)
    goes ahead and registers on a dead mm.
    """
    if not root.is_implicit_odp:
        raise MisuseError(f"alloc_child of {root!r}, which is not an implicit parent")
    child = IbUmemOdp(root.ibdev, root.owning_mm, address, size, writable=root.writable)
    child.context = root.context
    mm = root.owning_mm
    if owner.config.bug_child_without_mmget:
        ib_init_umem_odp(owner, scheme, child, context, root)
        return child
    if not mm.mmget_not_zero():
        raise BadAddressError(f"implicit ODP child of mm {mm.id}: the mm is gone (EFAULT)")
    try:
        ib_init_umem_odp(owner, scheme, child, context, root)
    finally:
        mm.mmput()
    return child


def ib_umem_odp_release(owner: Owner, scheme: PerMmScheme, umem: IbUmemOdp) -> None:
    """``ib_umem_odp_release``: the device stopped using ``umem``; unmap, leave the per_mm, ``mmdrop``, free.

    Order (5.4): unmap every DMA page under ``umem_mutex`` (not for an
    implicit parent, which maps nothing), then the scheme's write section
    (tree remove, ``complete_all``, put), then ``mmdrop``, then ``kfree``.
    """
    if not umem.is_implicit_odp:
        if owner.config.bug_unmap_takes_umem_mutex:
            unmap_dma_pages(umem, umem.start, umem.end, take_lock=True)
        else:
            with umem.umem_mutex:
                unmap_dma_pages(umem, umem.start, umem.end)
    scheme.release_umem(umem)
    umem.owning_mm.mmdrop()
    owner.stats["umem_free"] += 1
    kfree(umem)
