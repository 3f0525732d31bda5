"""Module parameters of the ``rdma_odp`` plugin (a frozen pydantic model).

Defaults are mlx5's: 4 KiB umem pages, implicit-ODP children of
``MLX5_IMR_MTT_SIZE`` (1 GiB), a fault that waits ``MMU_NOTIFIER_TIMEOUT``
(1000 ms) for an invalidation before handing ``-EAGAIN`` back to the HCA.
``scheme`` picks the kernel: ``"5.4"`` (one ``ib_ucontext_per_mm`` per mm
through ``mmu_notifier_get``/``put``, patches 06 and 07) or ``"5.3"`` (one per
(ucontext, mm) pair on the ucontext's ``per_mm_list``).

The ``bug_*`` switches put back code that a kernel shipped and a later commit
fixed (each named in its description); all default to the fixed code.
``bug_put_outside_rwsem`` is a counterfactual no kernel shipped.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mmu_notifier.config import DriverConfig, kernel_version

#: ``MMU_NOTIFIER_TIMEOUT`` of drivers/infiniband/hw/mlx5/odp.c, in milliseconds.
MMU_NOTIFIER_TIMEOUT_MS = 1000
#: ``MLX5_IMR_MTT_SIZE`` with 4 KiB pages: the span of one implicit-ODP child.
MLX5_IMR_MTT_SIZE = 1 << 30


class RdmaOdpConfig(DriverConfig):
    """``[drivers.rdma_odp]``: the ODP core, the mlx5-like device and the bug switches."""

    scheme: Annotated[Literal["5.3", "5.4", "5.5"], kernel_version()] = Field(
        default="5.4",
        description='"5.4": one ib_ucontext_per_mm per mm via mmu_notifier_get/put; '
        '"5.3": one per (ucontext, mm) on the ucontext\'s per_mm_list, registered while holding its lock; '
        '"5.5": one interval notifier per umem, no per_mm (explicit MRs only)',
    )
    page_shift: int = Field(
        default=12,
        ge=12,
        le=30,
        description="umem page shift (PAGE_SHIFT); must match the kernel's page size (huge-page umems are not "
        "modelled), checked when an MR is registered",
    )
    implicit_chunk_size: int = Field(
        default=MLX5_IMR_MTT_SIZE,
        gt=0,
        multiple_of=4096,
        description="bytes covered by one implicit-ODP child (MLX5_IMR_MTT_SIZE)",
    )
    fault_timeout_ms: int = Field(
        default=MMU_NOTIFIER_TIMEOUT_MS,
        ge=0,
        description="how long a retried page fault waits on notifier_completion (MMU_NOTIFIER_TIMEOUT)",
    )
    mtt_capacity: int = Field(
        default=1 << 16, ge=1, description="translation entries (MTTs) one device can hold; a fault past it is ENOMEM"
    )
    bug_missed_unlock: bool = Field(
        default=False,
        description="H-2: a refused non-blockable invalidate_range_start returns holding umem_rwsem "
        '(fixed by "RDMA/odp: Fix missed unlock in non-blocking invalidate_start")',
    )
    bug_child_without_mmget: bool = Field(
        default=False,
        description="H-3: an implicit child is created without mmget_not_zero on the owning mm (5.4 as shipped; "
        'fixed by "RDMA/odp: Ensure the mm is still alive before creating an implicit child")',
    )
    bug_unmap_takes_umem_mutex: bool = Field(
        default=False,
        description="H-4: ib_umem_odp_unmap_dma_pages takes umem_mutex itself and the dying test runs unlocked "
        '(fixed by "RDMA/odp: Lift umem_mutex out of ib_umem_odp_unmap_dma_pages()")',
    )
    bug_put_outside_rwsem: bool = Field(
        default=False,
        description="H-6 (counterfactual, no kernel shipped it): ib_umem_odp_release calls mmu_notifier_put "
        "after dropping umem_rwsem",
    )
    literal_release_tail: bool = Field(
        default=False,
        description="(reading) 5.4 literally: up_write after mmu_notifier_put with no SRCU read section, so the "
        "deferred free of the per_mm may run before the unlock touches it",
    )
