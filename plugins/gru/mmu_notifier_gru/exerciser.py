"""The conformance exerciser for ``gru``: the user path of a process using a GRU.

* attach: open ``/dev/gru``, mmap a GSEG, and create the thread state with
  the set-context-option ioctl (mmap lock for write: ``get_locked``);
* map_range: a GRU instruction may reference any address of the mm, so
  nothing to do beyond remembering the range;
* access: one GRU instruction referencing the address (context load on first
  use, TLB miss handled by the configured dropin path);
* translations: the TLB entries the mm's contexts can hit;
* detach: munmap the GSEG, whose close unloads the context and drops the
  thread state (the last drop ``put``s);
* unload: ``gru_exit``, which ends in ``mmu_notifier_synchronize``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmu_notifier import MM, Kernel
from mmu_notifier.exerciser import Handle
from mmu_notifier_gru.device import GruThreadState

if TYPE_CHECKING:
    from mmu_notifier_gru.device import GruDriverBase


class GruExerciser:
    """Drives one loaded GRU driver on ``kernel`` through :class:`mmu_notifier.exerciser.Exerciser`."""

    driver = "gru"

    def __init__(self, gru: GruDriverBase, kernel: Kernel) -> None:
        self.gru = gru
        self.kernel = kernel
        self.capabilities = gru.capabilities

    def attach(self, mm: MM) -> Handle:
        """Open the device, map a GSEG and create this thread's state (which ``get``s the GMS)."""
        vma = self.gru.gru_file_mmap(mm)
        gts = self.gru.gru_set_context_option(mm, vma.start)
        assert gts.ts_gms is not None
        return Handle(mm, gts.ts_gms, gts)

    def map_range(self, handle: Handle, start: int, end: int) -> None:
        """Remember the range: GRU instructions are not limited to registered ranges."""
        handle.ranges.append((start, end))

    def access(self, handle: Handle, address: int, write: bool = False) -> int | None:
        """One GRU instruction at ``address``: the frame it reached, or None (retry: interrupt path, no context)."""
        gts: GruThreadState = handle.state
        return self.gru.gru_instruction(gts, address, write)

    def translations(self, mm: MM) -> dict[int, int]:
        """Every TLB entry ``mm``'s GRU contexts can hit, as ``vpn -> pfn``."""
        return self.gru.device_translations(mm)

    def detach(self, handle: Handle) -> None:
        """munmap the GSEG (if the mm still lives); its close drops the thread state and ``put``s the GMS.

        The munmap holds an ``mm_users`` reference (``mmget_not_zero``) for its
        whole length, as a task unmapping its own mm does: after the process
        exited, another holder's last ``mmput`` could otherwise run
        ``exit_mmap`` between the munmap's start and end, unlinking every
        subscription so that a driver keeping a lock from start to end (rdma_odp's
        ``umem_rwsem``) never gets the end. A dying mm is left to ``exit_mmap``.
        """
        gts: GruThreadState = handle.state
        vma = gts.ts_vma
        assert vma is not None
        mm = handle.mm
        if mm.mmget_not_zero():
            try:
                mm.munmap(vma.start, vma.end - vma.start)
            finally:
                mm.mmput()
        self.gru.gru_vma_close(vma)

    def unload(self) -> None:
        """Module unload (``gru_exit``): close what is left, then ``mmu_notifier_synchronize``."""
        self.gru.gru_exit(self.kernel)
