"""The module parameters of the amdkfd model (a pydantic config).

Sizes follow the kernel's shapes, scaled so a test can exhaust them:

* ``pasid_min``/``pasid_max``: the PASID range of amdgpu's PASID allocator
  (16 bits; PASID 0 means "none" and is never handed out);
* ``doorbell_slices``: the number of per-process doorbell pages in the doorbell
  aperture (``max_doorbell_slices``); slice 0 is reserved, as in
  ``kfd_alloc_process_doorbells``, so ``doorbell_slices - 1`` processes can
  hold one at a time;
* ``doorbells_per_process``: doorbells in one slice, one per user queue;
* ``queues_per_process``: the process queue manager's queue-id bitmap
  (``KFD_MAX_NUM_OF_QUEUES_PER_PROCESS``).

``scheme`` selects the kernel being modelled (see the package docstring) and
``faults`` makes the three late init steps of process creation fail (see
:mod:`mmu_notifier_amdkfd.faults`). Every example below is valid TOML for the
core's ``[drivers.amdkfd]`` table::

    [drivers.amdkfd]
    scheme = "5.3"
    faults.init_apertures = { nth = 1 }

The scheme values are the kernel versions that shipped each driver: "5.3"
(before the series), "5.4" (patches 09 and 10) and "5.13" (the 2021
conversion to ``mmu_notifier_get``). The names of earlier releases,
``"legacy"`` and ``"get"``, are accepted as deprecated aliases.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmu_notifier.config import DriverConfig, kernel_version

#: The kernels the model can be: 5.4 (patches 09+10), 5.3 (before them), and 5.13 (the 2021 ``get`` conversion).
Scheme = Literal["5.3", "5.4", "5.13"]
#: The deprecated scheme names of earlier releases, and the kernel version each meant.
SCHEME_ALIASES = {"legacy": "5.3", "get": "5.13"}


class FaultPoint(BaseModel):
    """When one init step fails: on its ``nth`` call (1-based), and/or with ``probability`` (seeded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nth: int | None = Field(default=None, ge=1, description="fail exactly the Nth call of this step (1-based)")
    probability: float = Field(default=0.0, ge=0.0, le=1.0, description="fail any call with this probability")
    seed: int = Field(default=0, description="seed of the probability draws (one stream per step)")


class KfdFaults(BaseModel):
    """The injectable failures of process creation, by the kernel function that fails."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pqm_init: FaultPoint | None = Field(default=None, description="process queue manager init (-ENOMEM)")
    init_apertures: FaultPoint | None = Field(default=None, description="kfd_init_apertures (-ENOMEM)")
    cwsr: FaultPoint | None = Field(default=None, description="CWSR trap handler set-up: its vm_mmap (-ENOMEM)")


class KfdConfig(DriverConfig):
    """Configuration of the amdkfd driver model."""

    #: a TOML ``scheme = 5.4`` is read as text; a deprecated name (``"legacy"``, ``"get"``) as its version
    scheme: Annotated[Scheme, kernel_version(SCHEME_ALIASES)] = Field(
        default="5.4", description='"5.4" (default), "5.3" or "5.13" (the 2021 get conversion)')
    gpus: int = Field(default=1, ge=1, le=16, description="KFD devices (GPUs) in the topology")
    pasid_min: int = Field(default=1, ge=1, description="first PASID handed out (0 is never valid)")
    pasid_max: int = Field(default=0xFFFF, ge=1, le=0xFFFFF, description="last PASID handed out (20 bits at most)")
    doorbell_slices: int = Field(default=1024, ge=2, description="doorbell pages in the aperture; slice 0 is reserved")
    doorbells_per_process: int = Field(default=1024, ge=1, description="doorbells in a process's slice")
    queues_per_process: int = Field(default=1024, ge=1, description="queue ids of a process queue manager")
    cwsr: bool = Field(default=True, description="APU CWSR trap handler: a vm_mmap into the process at creation")
    faults: KfdFaults = Field(default_factory=KfdFaults, description="injected failures of process creation")

    @model_validator(mode="after")
    def _pasid_range_not_empty(self) -> KfdConfig:
        if self.pasid_max < self.pasid_min:
            raise ValueError(f"pasid_max ({self.pasid_max}) is below pasid_min ({self.pasid_min})")
        return self
