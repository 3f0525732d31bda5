"""The module parameters of the radeon userptr model (a pydantic config).

``scheme`` selects the kernel being modelled:

* ``"5.4"`` (default): ``radeon_mn.c`` after patch 08 of the get/put series and
  the "guard against calling an unpaired radeon_mn_unregister()" fix: one
  ``radeon_mn`` per mm shared by every radeon device, ``mmu_notifier_get``
  per registered BO, ``put`` per unregistered one;
* ``"5.5"``: "drm/radeon: use mmu_interval_notifier_insert": one interval
  notifier per userptr BO, no ``radeon_mn`` (:mod:`mmu_notifier_radeon.interval`);
  ``release_blockable`` and ``register_failure_put`` mean nothing there (no
  release, no per-mm get);
* ``"5.3"``: before patch 08: one ``radeon_mn`` per (device, mm) in the
  device's hash, registered with ``mmu_notifier_register``, never refcounted,
  destroyed by a work item scheduled from ``release``
  (:mod:`mmu_notifier_radeon.legacy`).

The switches reproduce the historical variants of the 5.4 code:
``unpaired_unregister_guard = false`` is patch 08 as posted (freeing a
non-userptr BO dereferences NULL), ``release_blockable = true`` is the release
of 5.5 (the core passes ``MMU_NOTIFIER_RANGE_BLOCKABLE``), and
``register_failure_put = true`` drops the user reference when the node
allocation fails after the ``get`` (5.4 does not: a leak, by a reading of the
code). Every example below is valid TOML for the core's ``[drivers.radeon]``
table::

    [drivers.radeon]
    scheme = "5.3"
    devices = 2
    fence_latency = 0
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mmu_notifier.config import DriverConfig, kernel_version

#: The kernels the model can be: 5.4 (patch 08 + the guard), 5.3 (the per-device hash), 5.5 (interval notifiers).
Scheme = Literal["5.4", "5.3", "5.5"]


class RadeonConfig(DriverConfig):
    """Configuration of the radeon userptr driver model."""

    #: ``scheme = 5.4`` (TOML) and ``MMU_NOTIFIER_RADEON__SCHEME=5.4`` arrive as a number: read as text
    scheme: Annotated[Scheme, kernel_version()] = Field(
        default="5.4", description='"5.4" (default: patch 08 and the guard), "5.3" (per-device hash, before patch 08) '
                                   'or "5.5" (one interval notifier per BO)')
    devices: int = Field(default=1, ge=1, le=8, description="radeon devices (GPUs) in the machine")
    gtt_pages: int = Field(default=4096, ge=1, description="pages of each device's GTT aperture")
    fence_latency: int = Field(default=1, ge=0, le=64,
                               description="scheduling points the GPU ring takes before it signals a submission's "
                                           "fence (0: the fence is signalled at submission)")
    unpaired_unregister_guard: bool = Field(
        default=True, description="radeon_mn_unregister returns when the BO was never registered (false: patch 08 as "
                                  "posted, where freeing any non-userptr BO dereferences NULL)")
    release_blockable: bool = Field(
        default=False, description="release invalidates the whole address space as a blockable range (5.5's release); "
                                   "false is 5.4, whose flags 0 make it non-blockable, so it refuses while BOs are "
                                   "registered")
    register_failure_put: bool = Field(
        default=False, description="put the user reference when the node allocation fails after the get (5.4 returns "
                                   "-ENOMEM without the put: a leak)")
    r600: bool = Field(default=True, description="the devices are R600 or newer (read-only userptrs allowed)")
