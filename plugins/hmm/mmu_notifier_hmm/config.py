"""The module parameters of the ``hmm`` plugin (a frozen pydantic model).

Two groups of settings:

* which ``struct hmm`` life cycle to model: the Linux 5.4 one built on
  ``mmu_notifier_get_locked``/``mmu_notifier_put`` (``scheme = "5.4"``, the
  default) or the 5.3 one with its own kref and the ``mm->hmm`` back pointer
  (``scheme = "5.3"``), the latter with or without the 5.3 fix that defers
  the free past an SRCU grace period (``legacy_srcu_fix``), or 5.5's, where
  ``hmm_mirror`` and the range API are gone and the device fault path runs on
  interval notifiers (``scheme = "5.5"``, :mod:`mmu_notifier_hmm.interval`). The names of
  earlier releases (``"getput"``, ``"legacy"``) are accepted as deprecated
  aliases;
* how the model device mirror (:mod:`mmu_notifier_hmm.device`) behaves: the
  size of its page table, how long a fault waits for its range to become
  valid, which non-blockable ranges it refuses, and which collision check its
  fault path uses before programming the device.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mmu_notifier.config import DriverConfig, kernel_version

#: The deprecated scheme names of earlier releases, and the kernel version each meant.
SCHEME_ALIASES = {"legacy": "5.3", "getput": "5.4"}

#: ``HMM_RANGE_DEFAULT_TIMEOUT`` of Linux 5.4, in milliseconds.
HMM_RANGE_DEFAULT_TIMEOUT_MS = 1000


class HmmConfig(DriverConfig):
    """Configuration of :class:`mmu_notifier_hmm.HmmDriver`.

    ``refuse_nonblock``: ``"all"`` refuses every non-blockable invalidation
    with ``-EAGAIN`` as nouveau's ``sync_cpu_device_pagetables`` did in 5.4;
    ``"overlapping"`` refuses only when it cannot take the device lock without
    sleeping or when the device maps something in the range.

    ``collision_check``: what the device fault path checks under its update
    lock before programming the device. ``"range_valid"`` is the 5.4
    documented loop verbatim (``hmm_range_valid`` only); it misses an
    invalidation that starts and ends between ``hmm_range_fault`` and the
    check, the bug the 5.5 commit "mm/hmm: allow hmm_range to be used with a
    mmu_interval_notifier or hmm_mirror" describes. ``"sequence"`` (default)
    adds a device-side invalidation sequence count sampled before the walk,
    which closes that hole. Under ``scheme = "5.5"`` the field is ignored:
    the fault path checks ``mmu_interval_read_retry`` instead.
    """

    scheme: Annotated[Literal["5.3", "5.4", "5.5"], kernel_version(SCHEME_ALIASES)] = "5.4"
    legacy_srcu_fix: bool = True
    device_pages: int = Field(default=512, ge=1, description="entries of the device page table")
    fault_timeout_ms: int = Field(
        default=HMM_RANGE_DEFAULT_TIMEOUT_MS, ge=0, description="hmm_range_wait_until_valid timeout of a fault"
    )
    refuse_nonblock: Literal["all", "overlapping"] = "all"
    collision_check: Literal["range_valid", "sequence"] = "sequence"
