"""``struct radeon_mn``: the per-mm notifier of radeon userptr BOs (``drivers/gpu/drm/radeon/radeon_mn.c``, 5.4).

After patch 08 of the get/put series there is one :class:`RadeonMN` per mm,
shared by every radeon device (the ops are the key of ``mmu_notifier_get``):
a mutex and an interval tree of :class:`RadeonMNNode`\\ s. Each registered
BO holds one user reference:

* :meth:`Scheme54.register` (``radeon_mn_register``): ``mmu_notifier_get``,
  then under the lock merge every node overlapping the BO's range into one
  node whose interval is the union (the last merged node is reused, the
  others are freed), add the BO to its list, insert it, set ``bo->mn``. If
  no node overlapped and the node allocation fails, -ENOMEM is returned
  **without a put** (a leak, by a reading of the code: fault site
  ``radeon.node_alloc``; ``register_failure_put`` is the fix);
* :meth:`Scheme54.unregister` (``radeon_mn_unregister``): nothing for a BO
  that was never registered (the guard; ``unpaired_unregister_guard =
  false`` is patch 08 as posted and oopses on ``bo->mn == NULL``); else
  under the lock drop the BO from its node and free the node with its last
  BO (the interval never shrinks), unlock, ``put``, clear ``bo->mn``;
* :func:`invalidate_range_start` (the only invalidation op; there is no end):
  lock (trylock when non-blockable), walk the nodes overlapping the range;
  a non-blockable range is refused at the first overlapping node, bound BOs
  or not; otherwise every *bound* BO of every overlapping node (including
  BOs of that node outside the range) is reserved, its fences waited for,
  moved to the CPU domain (unbound, unpinned) and unreserved. A failed
  reserve or validate is logged and skipped: that BO stays bound;
* :meth:`Scheme54.release`: the same start over the whole address space with
  flags 0, called directly: not blockable by 5.4's definition, so it
  trylocks and refuses at the first node; while any BO is registered it does
  nothing (``release_blockable`` gives 5.5's blockable release).

The model deviates where the kernel would crash in a way a test cannot
observe: the NULL dereference of the unguarded unregister raises
:class:`~mmu_notifier_radeon.device.KernelOops`.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from mmu_notifier import MM, Event, MMUNotifier, Range, get, put, sync, synchronize
from mmu_notifier.errors import NoMemoryError
from mmu_notifier.itree import IntervalTree
from mmu_notifier.log import LOG
from mmu_notifier.range import RANGE_BLOCKABLE
from mmu_notifier_radeon.device import DOMAIN_CPU, KernelOops, should_fail

if TYPE_CHECKING:
    from mmu_notifier_radeon.device import Radeon, RadeonBO, RadeonDevice

__all__ = ["ULONG_MAX", "RadeonMN", "RadeonMNNode", "Scheme", "Scheme54", "invalidate_range_start"]

#: the end of release's range (``ULONG_MAX``)
ULONG_MAX = (1 << 64) - 1
_EAGAIN = -errno.EAGAIN


class RadeonMNNode:
    """``struct radeon_mn_node``: an interval ``[start, last]`` of the tree and the BOs it covers."""

    __slots__ = ("start", "last", "bos")

    def __init__(self, start: int, last: int) -> None:
        self.start = start
        self.last = last
        self.bos: list[RadeonBO] = []

    def __repr__(self) -> str:
        return f"<RadeonMNNode {self.start:#x}-{self.last:#x} bos={[bo.id for bo in self.bos]}>"


class RadeonMN(MMUNotifier):
    """``struct radeon_mn``: the embedded notifier, a mutex and the interval tree of nodes.

    In 5.3 it also names its device and mm, sits in the device's hash and has
    a destroy work item (:mod:`mmu_notifier_radeon.legacy` sets those).
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = sync.Mutex("radeon_mn.lock")
        self.objects: IntervalTree[RadeonMNNode] = IntervalTree("radeon_mn.objects")

    def nodes(self) -> list[RadeonMNNode]:
        """Every node in address order."""
        return list(self.objects)


def merge_insert(rmn: RadeonMN, bo: RadeonBO, addr: int, node_alloc_fails: Callable[[], bool]) -> bool:
    """The body of ``radeon_mn_register`` under ``rmn->lock``: merge overlapping nodes, add ``bo``.

    A new node is allocated only when nothing overlapped; returns False (and
    changes nothing) when ``node_alloc_fails()`` says that allocation failed.
    """
    start, last = addr, addr + bo.size - 1
    merged = list(rmn.objects.iter_overlap(start, last))
    if not merged and node_alloc_fails():
        return False
    bos: list[RadeonBO] = []
    for node in merged:
        rmn.objects.remove(node)
        start, last = min(node.start, start), max(node.last, last)
        bos += node.bos
    node = merged[-1] if merged else RadeonMNNode(start, last)
    node.start, node.last = start, last
    node.bos = [bo, *bos]
    for member in node.bos:
        member.mn_node = node
    bo.mn = rmn
    rmn.objects.insert(node)
    return True


def remove_bo(rmn: RadeonMN, bo: RadeonBO) -> None:
    """The body of ``radeon_mn_unregister`` under ``rmn->lock``: drop ``bo``; free its node with its last BO."""
    node = bo.mn_node
    assert node is not None
    node.bos.remove(bo)
    bo.mn_node = None
    if not node.bos:
        rmn.objects.remove(node)


def invalidate_range_start(module: Radeon, rmn: RadeonMN, range: Range) -> int:
    """``radeon_mn_invalidate_range_start``: evict every bound BO of every node overlapping ``range``.

    Returns 0, or ``-EAGAIN`` for a non-blockable range whose lock is
    contended or that overlaps any node.
    """
    blockable = bool(range.flags & RANGE_BLOCKABLE)
    if blockable:
        rmn.lock.lock()
    elif not rmn.lock.trylock():
        return _EAGAIN
    try:
        last = range.end - 1  # the notification is exclusive, the tree inclusive
        for node in rmn.objects.iter_overlap(range.start, last):
            if not blockable:
                return _EAGAIN
            for bo in list(node.bos):
                sync.yield_now()  # the kernel reads the TTM state without the reservation: a racy read
                if not bo.bound:
                    continue
                evict(module, bo)
    finally:
        rmn.lock.unlock()
    return 0


def evict(module: Radeon, bo: RadeonBO) -> None:
    """Reserve, wait for every fence, move to the CPU domain, unreserve; failures are DRM_ERRORs and skipped."""
    rdev = bo.rdev
    if should_fail(module.kernel, "radeon.bo_reserve"):
        module.stat("reserve_failed")
        if LOG.on:
            LOG.event("radeon.error", what="failed to reserve user bo", bo=bo.id)
        return
    rdev.bo_reserve(bo)
    try:
        bo.resv.wait_all()
        try:
            rdev.ttm_bo_validate(bo, DOMAIN_CPU)
        except NoMemoryError:
            module.stat("validate_failed")
            if LOG.on:
                LOG.event("radeon.error", what="failed to validate user bo", bo=bo.id)
        else:
            module.stat("evict")
    finally:
        rdev.bo_unreserve(bo)


class Scheme:
    """How radeon registers and unregisters BOs and what release and module exit do, for one kernel version."""

    version = "?"
    #: the members of ``radeon_mn_ops`` this kernel fills
    ops: frozenset[str] = frozenset()

    def register(self, rdev: RadeonDevice, bo: RadeonBO, addr: int, mm: MM) -> None:
        """``radeon_mn_register`` for ``bo`` at ``addr`` of ``mm`` (``current->mm``); raises a KernelError."""
        raise NotImplementedError

    def unregister(self, rdev: RadeonDevice, bo: RadeonBO) -> None:
        """``radeon_mn_unregister``, called for every freed GEM object."""
        raise NotImplementedError

    def alloc_notifier(self, module: Radeon, mm: MM) -> RadeonMN:
        """``radeon_mn_alloc_notifier`` (only in kernels whose ``ops`` list it)."""
        raise NotImplementedError

    def free_notifier(self, module: Radeon, rmn: RadeonMN) -> None:
        """``radeon_mn_free_notifier`` (only in kernels whose ``ops`` list it)."""
        raise NotImplementedError

    def release(self, module: Radeon, rmn: RadeonMN, mm: MM) -> None:
        """``radeon_mn_release``: the mm is being torn down."""
        raise NotImplementedError

    def module_exit(self, module: Radeon) -> None:
        """What ``radeon_exit`` does for the notifiers once every file is closed."""
        raise NotImplementedError


class Scheme54(Scheme):
    """Linux 5.4: patch 08 (get/put) and the unpaired-unregister guard."""

    version = "5.4"
    ops = frozenset({"release", "invalidate_range_start", "alloc_notifier", "free_notifier"})

    def register(self, rdev: RadeonDevice, bo: RadeonBO, addr: int, mm: MM) -> None:
        """``mmu_notifier_get`` (mmap lock for write inside), then merge and insert under ``rmn->lock``."""
        module = rdev.module
        rmn = cast(RadeonMN, get(module.driver, mm))
        with rmn.lock:
            ok = merge_insert(rmn, bo, addr, lambda: should_fail(module.kernel, "radeon.node_alloc"))
        if not ok:
            module.stat("node_alloc_failed")
            if module.config.register_failure_put:
                put(rmn)
            raise NoMemoryError(f"radeon_mn_register: no memory for the node of {bo!r}")
        module.stat("register")

    def unregister(self, rdev: RadeonDevice, bo: RadeonBO) -> None:
        """Guard, remove under ``rmn->lock``, unlock, ``put``, clear ``bo->mn``."""
        rmn = bo.mn
        if rmn is None:
            if rdev.module.config.unpaired_unregister_guard:
                return
            raise KernelOops(f"radeon_mn_unregister: NULL pointer dereference (bo->mn->lock) freeing {bo!r}, "
                             f"a BO never registered with a radeon_mn")
        with rmn.lock:
            remove_bo(rmn, bo)
        put(rmn)
        bo.mn = None
        rdev.module.stat("unregister")

    def alloc_notifier(self, module: Radeon, mm: MM) -> RadeonMN:
        """kzalloc, mutex_init, empty tree (fault site ``radeon.alloc_notifier``: ENOMEM)."""
        if should_fail(module.kernel, "radeon.alloc_notifier"):
            raise NoMemoryError("radeon_mn_alloc_notifier: kzalloc failed")
        rmn = RadeonMN()
        module.rmns[id(rmn)] = f"radeon_mn of mm {mm.id}"
        module.stat("rmn_alloc")
        return rmn

    def free_notifier(self, module: Radeon, rmn: RadeonMN) -> None:
        """kfree (the core poisons the object right after)."""
        module.rmns.pop(id(rmn), None)
        module.stat("rmn_free")

    def release(self, module: Radeon, rmn: RadeonMN, mm: MM) -> None:
        """The whole address space as one UNMAP range with flags 0 (or, switched, blockable as in 5.5)."""
        flags = RANGE_BLOCKABLE if module.config.release_blockable else 0
        ret = invalidate_range_start(module, rmn, Range(mm, 0, ULONG_MAX, Event.UNMAP, flags=flags))
        if ret:
            module.stat("release_refused")  # the kernel ignores the return value and logs nothing

    def module_exit(self, module: Radeon) -> None:
        """Patch 08 added ``mmu_notifier_synchronize`` to ``radeon_exit``."""
        synchronize(module.kernel)
