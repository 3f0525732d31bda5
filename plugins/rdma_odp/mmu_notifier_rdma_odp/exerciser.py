"""The conformance exerciser of ``rdma_odp``: a verbs context and one ODP MR per attach, on two devices.

* ``attach``: the process opens a device (the attaches alternate between
  ``mlx5_0`` and ``mlx5_1``) and registers an explicit ODP MR over the whole
  user address space; ``ib_init_umem_odp`` ends in ``mmu_notifier_get``, so
  every attach of an mm, whatever its device, shares the one per_mm.
* ``map_range`` records the interest (the MR already covers everything).
* ``access`` is an HCA page fault on that MR; ``-EAGAIN`` (an invalidation
  raced) is "retry later" (None).
* ``detach``: deregister the MR (revoke, unmap, ``put`` under ``umem_rwsem``)
  and close the context; works after exit.

Why not implicit ODP here: the kit requires ``users`` to equal the attaches,
and every implicit child takes its own reference (``users`` counts umems), so
implicit MRs are exercised by the plugin's own tests and scenarios instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmu_notifier import MM, BadAddressError, Kernel, TryAgainError
from mmu_notifier.exerciser import Handle
from mmu_notifier.mm import TASK_SIZE
from mmu_notifier_rdma_odp.device import IbUcontext, Mlx5Device, Mlx5Mr

if TYPE_CHECKING:
    from mmu_notifier_rdma_odp import RdmaOdpDriver


#: The conformance checks the 5.3 scheme fails by design, with the kernel's reason (the kit expects them to fail).
KNOWN_5_3_FAILURES: dict[str, str] = {
    "test_one_subscription_per_mm": "5.3 keeps one ib_ucontext_per_mm per (ucontext, mm): attaches from two verbs "
    "contexts hold two registrations, each with users == 1 (the count is odp_mrs_count)",
    "test_alloc_free_paired": "5.3 frees its per_mm with unregister_no_release + call_srcu + kfree; free_notifier "
    "does not exist before the series",
    "test_state_machine": "the one-per-(ucontext, mm) registration of 5.3, seen by the registration invariant",
    "test_detach_after_exit_frees_once": "the 5.3 free after exit is a kfree, never free_notifier",
}


class RdmaOdpExerciser:
    """:class:`mmu_notifier.exerciser.Exerciser` for ``rdma_odp``."""

    driver = "rdma_odp"

    def __init__(self, kernel: Kernel, odp_driver: RdmaOdpDriver) -> None:
        self.kernel = kernel
        self.odp_driver = odp_driver
        self.capabilities = odp_driver.capabilities
        self.devices = [Mlx5Device(odp_driver, "mlx5_0"), Mlx5Device(odp_driver, "mlx5_1")]
        #: open verbs contexts, oldest first (a dict: a close is O(1) at any scale)
        self.contexts: dict[IbUcontext, None] = {}
        self._attaches = 0
        #: conformance test name -> why the modelled kernel fails it
        self.known_kernel_failures = dict(KNOWN_5_3_FAILURES) if odp_driver.config.scheme == "5.3" else {}
        #: 5.5: MRs come with map_range, each its own interval notifier
        self.interval = odp_driver.config.scheme == "5.5"

    def attach(self, mm: MM) -> Handle:
        """Open the next device and register an ODP MR over the whole address space (ends in ``get``).

        5.5 (``interval_only``): only open the verbs context; each ``map_range`` registers an MR (one
        interval notifier per umem) and the handle holds no list subscription.
        """
        device = self.devices[self._attaches % len(self.devices)]
        self._attaches += 1
        context = self.odp_driver.open(device, mm)
        if self.interval:
            self.contexts[context] = None
            return Handle(mm, None, (context, None))
        mr = context.reg_mr(0, TASK_SIZE)
        self.contexts[context] = None
        assert mr.umem.per_mm is not None
        return Handle(mm, mr.umem.per_mm, (context, mr))

    def map_range(self, handle: Handle, start: int, end: int) -> None:
        """Record the interest; the attach's MR covers the whole address space (5.5: register an MR over it)."""
        if self.interval:
            context, _ = handle.state
            context.reg_mr(start, end - start)
        handle.ranges.append((start, end))

    def access(self, handle: Handle, address: int, write: bool = False) -> int | None:
        """An HCA page fault on the attach's MR; None when it must be retried (EAGAIN)."""
        context, mr = handle.state
        if self.interval:  # the newest live MR of the context covering the address
            covering = [m for m in context.mrs if m.umem.start <= address <= m.umem.last]
            if not covering:
                raise BadAddressError(f"rdma_odp: no MR of {context!r} covers {address:#x}")
            mr = covering[-1]
        assert isinstance(mr, Mlx5Mr) and isinstance(context, IbUcontext)
        try:
            return context.device.page_fault(mr, address, write)
        except TryAgainError:
            return None

    def translations(self, mm: MM) -> dict[int, int]:
        """Every MTT of ``mm`` on both devices, merged."""
        merged: dict[int, int] = {}
        for device in self.devices:
            merged.update(device.translations(mm))
        return merged

    def detach(self, handle: Handle) -> None:
        """Deregister the MR and close the context (the put)."""
        context, _mr = handle.state
        context.close()
        del self.contexts[context]

    def unload(self) -> None:
        """Module exit: close every context left, then ``ib_uverbs_cleanup`` (flush, ``synchronize``)."""
        for context in list(self.contexts):
            context.close()
        self.contexts.clear()
        self.odp_driver.ib_uverbs_cleanup(self.kernel)
