"""The conformance exerciser of amdkfd: the user-facing path of a release-only driver.

* ``attach`` is ``open("/dev/kfd")`` from a thread of the mm: it finds or
  creates the process, and creation ends in ``register`` (``get`` in the
  ``"5.13"`` scheme);
* ``map_range`` creates a user queue whose ring buffer is the range (queues
  take turns over the GPUs);
* ``access`` is a GPU access through one of the process's queues: ATS through
  the IOMMUv2, which walks the CPU page table and resolves misses with
  ``handle_mm_fault``; None while no queue runs (none created, evicted, or
  the mm is gone);
* ``translations`` are the queues' view of the mm: each page a GPU accessed,
  mapped to the frame the CPU page table has there now. The IOMMU shares the
  CPU's page tables (its IOTLB is flushed by ``amd_iommu_v2``'s own notifier,
  not modelled), so kfd itself keeps no translation that could go stale: it
  does not declare ``DEVICE_TRANSLATIONS``, which promises a translation cache
  the driver keeps coherent with invalidation callbacks;
* ``detach`` does nothing: in 5.4 closing /dev/kfd holds and drops no process
  reference, the process goes with the mm (``put`` from ``release``);
* ``unload`` is module exit: ``synchronize``, then the workqueues drain.
"""

from __future__ import annotations

from mmu_notifier import MM
from mmu_notifier.exerciser import DETACH_BY_EXIT, RELEASE, Handle
from mmu_notifier_amdkfd.lifetime import Kfd

#: What the conformance kit may expect of amdkfd.
CAPABILITIES = frozenset({RELEASE, DETACH_BY_EXIT})


class KfdExerciser:
    """Drives one kfd module instance (one modelled machine) through its user-facing path."""

    driver = "amdkfd"
    capabilities = CAPABILITIES

    def __init__(self, kfd: Kfd) -> None:
        self.kfd = kfd

    def attach(self, mm: MM) -> Handle:
        """``open("/dev/kfd")``: the process of ``mm`` (created by the first open); raises its error."""
        process = self.kfd.kfd_create_process(mm)
        return Handle(mm, process.mmu_notifier, process)

    def map_range(self, handle: Handle, start: int, end: int) -> None:
        """Create a user queue with its ring at ``[start, end)``, on the next GPU in turn."""
        gpu = len(handle.ranges) % len(self.kfd.devices)
        self.kfd.create_queue(handle.mm, gpu, start, end)
        handle.ranges.append((start, end))

    def access(self, handle: Handle, address: int, write: bool = False) -> int | None:
        """A GPU access at ``address``; the frame, or None while the process runs no queue."""
        return self.kfd.device_access(handle.mm, address, write)

    def translations(self, mm: MM) -> dict[int, int]:
        """The GPUs' view of ``mm``: virtual page -> frame, for every page they accessed."""
        return self.kfd.translations(mm)

    def detach(self, handle: Handle) -> None:
        """``close`` of /dev/kfd: nothing to drop (``DETACH_BY_EXIT``)."""

    def unload(self) -> None:
        """Module unload: ``synchronize``, then drain kfd's workqueues."""
        self.kfd.module_exit()
