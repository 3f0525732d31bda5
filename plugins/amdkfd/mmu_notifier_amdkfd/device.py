"""The GPUs as far as process lifetime goes: devices, user queues, per-GPU process data, id pools, IOMMUv2.

Models ``struct kfd_dev`` (only its index and whether CWSR is enabled), a
user-mode ``struct queue`` with its ring in the process's mm,
``struct kfd_process_device``, the bounded ``struct ida`` pools PASIDs,
doorbell slices and queue ids come from, and the translation path of a GPU on
an APU: ``amd_iommu_v2`` resolving a page request by walking (and faulting)
the CPU page table, so the device's view of a page is always the CPU's
current entry. The GPU VM and buffer objects are not modelled.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from mmu_notifier import MM, sync
from mmu_notifier.errors import BadAddressError


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



def iommu_v2_fault(mm: MM, address: int, write: bool) -> int | None:
    """``amd_iommu_v2``'s ``do_fault``: resolve a device page request; None for an invalid response."""
    if not mm.mmget_not_zero():
        return None
    try:
        return mm.fault(address, write)
    except BadAddressError:
        return None
    finally:
        mm.mmput()
