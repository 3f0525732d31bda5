"""The ``hmm`` driver plugin: the HMM mirror of Linux 5.4 (``mm/hmm.c``, ``include/linux/hmm.h``).

One :class:`~mmu_notifier_hmm.hmm.Hmm` (``struct hmm``) per mm is the mm's
``hmm`` subscription, shared by every mirror of that mm
(:mod:`mmu_notifier_hmm.mirror`); drivers track CPU page-table changes over
address ranges with the range API (:mod:`mmu_notifier_hmm.range`); a model
device mirror like nouveau's SVM shows the documented fault loop
(:mod:`mmu_notifier_hmm.device`). ``scheme = "5.3"`` swaps in the 5.3
object with its own kref (:mod:`mmu_notifier_hmm.legacy`); ``scheme = "5.5"``
models 5.5, where ``hmm_mirror`` is gone and the device fault path runs on
interval notifiers (:mod:`mmu_notifier_hmm.interval`).

The scheme is chosen once, in :class:`HmmDriver`'s constructor: the scheme
object (:class:`~mmu_notifier_hmm.hmm.HmmScheme54` or
:class:`~mmu_notifier_hmm.legacy.HmmScheme53` or
:class:`~mmu_notifier_hmm.interval.HmmScheme55`) makes and references the
struct hmm (5.5: the shared per-mm list notifier). The driver's notifier callbacks forward to the subscription
object, whose class carries the scheme: 5.4's are plain, 5.3's run under a
temporary kref.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mmu_notifier import MM, Driver, Kernel, MMUIntervalNotifier, Range, hookimpl
from mmu_notifier.errors import PermissionDeniedError  # EPERM: the core's, re-exported for earlier imports
from mmu_notifier.exerciser import DEVICE_TRANSLATIONS, INTERVAL, REFUSES_NONBLOCK, RELEASE
from mmu_notifier_hmm.config import HmmConfig
from mmu_notifier_hmm.device import DeviceMirror
from mmu_notifier_hmm.hmm import Hmm, HmmScheme54
from mmu_notifier_hmm.interval import SCHEME_OPS_55, HmmIntervalNotifier, HmmScheme55, invalidate
from mmu_notifier_hmm.legacy import BackPointers, HmmScheme53, LegacyHmm
from mmu_notifier_hmm.mirror import HmmMirror, mirror_register, mirror_unregister
from mmu_notifier_hmm.range import (
    HmmPfn,
    HmmPfnFlag,
    HmmRange,
    range_fault,
    range_register,
    range_unregister,
    range_valid,
    range_wait_until_valid,
)

if TYPE_CHECKING:
    from mmu_notifier.explore import Scenario
    from mmu_notifier_hmm.exerciser import HmmExerciser

__all__ = [
    "DeviceMirror",
    "Hmm",
    "HmmConfig",
    "HmmDriver",
    "HmmIntervalNotifier",
    "HmmMirror",
    "HmmPfn",
    "HmmPfnFlag",
    "HmmRange",
    "LegacyHmm",
    "PermissionDeniedError",
    "mirror_register",
    "mirror_unregister",
    "range_fault",
    "range_register",
    "range_unregister",
    "range_valid",
    "range_wait_until_valid",
]


#: What the kit may expect of each kernel's build: 5.5 adds the interval notifiers of the fault path.
CAPABILITIES = frozenset({RELEASE, REFUSES_NONBLOCK, DEVICE_TRANSLATIONS})
CAPABILITIES_55 = CAPABILITIES | {INTERVAL}
#: Every callback some kernel's ops fill; :meth:`HmmDriver.null_callbacks` names those the chosen one leaves NULL.
ALL_OPS = frozenset({"alloc_notifier", "free_notifier", "release", "invalidate_range_start",
                     "invalidate_range_end", "invalidate"})
#: The callbacks each kernel's ops fill (5.5: no end, plus the interval invalidate; 5.3's model keeps the 5.4 table,
#: whose alloc/free_notifier its life cycle never reaches).
SCHEME_OPS = {"5.3": ALL_OPS - {"invalidate"},
              "5.4": ALL_OPS - {"invalidate"},
              "5.5": SCHEME_OPS_55}


class HmmDriver(Driver):
    """``hmm_mmu_notifier_ops``: the notifier side of ``mm/hmm.c`` (5.5: nouveau's SVM notifiers).

    ``back_pointers`` is the legacy scheme's ``mm->hmm`` (the model may not add
    a field to the core's mm), guarded by each mm's ``page_table_lock``.
    """

    name: ClassVar[str] = "hmm"
    version: ClassVar[str] = "5.4"
    config_model: ClassVar[type[HmmConfig]] = HmmConfig
    capabilities: ClassVar[frozenset[str]] = CAPABILITIES

    config: HmmConfig

    def __init__(self, config: HmmConfig | None = None) -> None:
        super().__init__(config)
        self.back_pointers: BackPointers = {}
        self.scheme: HmmScheme53 | HmmScheme54 | HmmScheme55
        if self.config.scheme == "5.3":
            self.scheme = HmmScheme53(self.back_pointers, self.config.legacy_srcu_fix)
        elif self.config.scheme == "5.5":
            self.scheme = HmmScheme55()
        else:
            self.scheme = HmmScheme54()
        # what the kit may expect of the chosen build (read by the kit through getattr)
        setattr(self, "capabilities", CAPABILITIES_55 if self.config.scheme == "5.5" else CAPABILITIES)  # noqa: B010

    def null_callbacks(self) -> frozenset[str]:
        """The callbacks the chosen kernel leaves NULL (5.3/5.4: the interval invalidate; 5.5: invalidate_range_end)."""
        return ALL_OPS - SCHEME_OPS[self.config.scheme]

    def hmm_get_locked(self, mm: MM) -> Hmm:
        """The mm's struct hmm with one more reference; the caller holds the mmap lock for write.

        5.4: ``mmu_notifier_get_locked`` (allocating through
        :meth:`alloc_notifier` on first use). 5.3: ``hmm_get_or_create``.
        """
        return self.scheme.hmm_get_locked(self, mm)

    # -- mmu_notifier_ops ------------------------------------------------------
    @hookimpl
    def alloc_notifier(self, mm: MM) -> Hmm:
        """``hmm_alloc_notifier``: a fresh struct hmm, no mirror, no range, nothing in flight (5.4 only)."""
        return self.scheme.alloc_notifier(mm)

    @hookimpl
    def free_notifier(self, subscription: Hmm) -> None:
        """``hmm_free_notifier`` (atomic context): WARN about leftovers; the core frees the memory."""
        subscription.free()

    @hookimpl
    def release(self, subscription: Hmm, mm: MM) -> None:
        """``hmm_release``: every mirror's ``release`` (``mm`` is the subscription's own)."""
        subscription.release()

    @hookimpl
    def invalidate_range_start(self, subscription: Hmm, range: Range) -> int:
        """``hmm_invalidate_range_start``: 0 or ``-EAGAIN`` (non-blockable only)."""
        return subscription.invalidate_range_start(range)

    @hookimpl
    def invalidate_range_end(self, subscription: Hmm, range: Range) -> None:
        """``hmm_invalidate_range_end``."""
        subscription.invalidate_range_end(range)

    @hookimpl
    def invalidate(self, subscription: MMUIntervalNotifier, range: Range, cur_seq: int) -> bool:
        """``nouveau_svm_range_invalidate`` (5.5): ``mmu_interval_set_seq`` under the device's update lock."""
        assert isinstance(subscription, HmmIntervalNotifier)
        return invalidate(subscription, range, cur_seq)

    # -- model plumbing ------------------------------------------------------------
    @hookimpl
    def exerciser(self, kernel: Kernel) -> HmmExerciser:
        """The conformance exerciser: a model device per attach."""
        from mmu_notifier_hmm.exerciser import HmmExerciser

        return HmmExerciser(kernel, self)

    @hookimpl
    def explore_scenarios(self) -> list[Scenario]:
        """The plugin's explorer scenarios (each builds its own kernel and driver)."""
        from mmu_notifier_hmm.scenarios import SCENARIOS

        return list(SCENARIOS)
