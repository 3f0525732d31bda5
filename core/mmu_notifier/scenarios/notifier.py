"""The race fixed by patch 09 (amdkfd ``create_process`` unwind) and the same flow under get/put.

Both scenarios have the same shape (see ``drivers.md`` section 5):

* thread ``A`` (open of /dev/kfd) makes the process object, whose notifier is
  embedded in it, visible on the mm's notifier list; then a later init step
  fails and the object is unwound;
* thread ``B`` (reclaim, or another thread of the process) runs an
  invalidation of the same mm: an SRCU read section that walks the list and
  may be preempted holding A's notifier.

``B`` waits for the notifier to be on the list before invalidating: the race
only exists from that point on, and starting it earlier adds schedules that
cannot fail. (It also makes the bug depth 2 in PCT's sense: B must be
preempted between loading the element and using it, and A must free in
between.)

``unregister-no-release`` unwinds as v5.3 did: ``unregister_no_release`` then
``kfree``, with no grace period in between, so B can touch freed memory.
``get-put`` is the v5.4 form: ``get`` then ``put``, whose free waits for
B's read section; after ``synchronize`` every allocation must have been freed.
"""

from __future__ import annotations

import functools

from mmu_notifier import kmem, legacy, notifier, sync
from mmu_notifier.explore import LeakTracker, Scenario, ScenarioInstance
from mmu_notifier.hookspecs import hookimpl
from mmu_notifier.kernel import Kernel
from mmu_notifier.mm import MM
from mmu_notifier.notifier import MMUNotifier
from mmu_notifier.plugins import Driver, MMUNotifierOps
from mmu_notifier.range import Event, Range
from mmu_notifier.scenarios._checks import kernel_clean

#: pages of the invalidated range (any range: the walk visits every subscription)
_PAGES = 16


class KFDProcess(MMUNotifier):
    """``struct kfd_process`` with its embedded ``struct mmu_notifier``."""

    def __init__(self) -> None:
        super().__init__()
        self.pasid = 0x8001


class LegacyKFD(Driver):
    """amdkfd as of v5.3: a release-only notifier the driver frees itself."""

    name = "amdkfd"
    version = "5.3"
    required_hooks = ()

    @hookimpl
    def release(self, subscription: MMUNotifier, mm: MM) -> None:
        """The process is torn down with the mm (not reached in these scenarios)."""


class GetPutKFD(Driver):
    """amdkfd written with get/put: the core allocates through it and frees after a grace period.

    ``tracker`` is replaced by every build (the driver object itself is loaded once).
    """

    name = "amdkfd"
    version = "5.4"

    def __init__(self) -> None:
        super().__init__()
        self.tracker = LeakTracker("kfd_process")

    @hookimpl
    def alloc_notifier(self, mm: MM) -> MMUNotifier:
        """``kfd_process`` creation as ``alloc_notifier``."""
        process = KFDProcess()
        self.tracker.alloc(process, "GetPutKFD.alloc_notifier")
        return process

    @hookimpl
    def free_notifier(self, subscription: MMUNotifier) -> None:
        """``kfd_unref_process`` as ``free_notifier``: runs after the grace period."""
        self.tracker.free(subscription)


@functools.cache
def loaded(driver_class: type[Driver]) -> tuple[Driver, MMUNotifierOps]:
    """The driver object and its resolved ops, loaded once per process.

    Loading validates the hooks and resolves them through pluggy, which costs
    more than a whole schedule; the ops table is immutable and identifies the
    driver, so every per-schedule kernel can use it (``get``/``register``
    accept an ops table for the driver).
    """
    driver = driver_class()
    return driver, Kernel(frames=1).drivers.add(driver)


def _invalidate(mm: MM, visible: sync.Completion) -> None:
    """Thread B: once the notifier is visible, an invalidation without the mmap lock (reclaim)."""
    visible.wait()
    rng = Range(mm, 0, _PAGES * mm.page_size, Event.CLEAR)
    notifier.invalidate_range_start(rng)
    notifier.invalidate_range_end(rng)


def _unregister_no_release() -> ScenarioInstance:
    kernel = Kernel(frames=64)
    _, kfd = loaded(LegacyKFD)
    mm = MM(kernel)
    visible = sync.Completion("notifier_visible")
    run = ScenarioInstance()

    @run.thread("A")
    def create_process() -> None:
        process = KFDProcess()
        notifier.register(process, mm, driver=kfd)
        visible.complete()
        # pqm_init() fails: the v5.3 unwind, with no grace period before the free
        legacy.unregister_no_release(process, mm)
        kmem.kfree(process)

    run.thread("B")(lambda: _invalidate(mm, visible))
    run.check(lambda: kernel_clean(kernel))
    return run


def _get_put() -> ScenarioInstance:
    kernel = Kernel(frames=64)
    driver, kfd = loaded(GetPutKFD)
    tracker = driver.tracker = LeakTracker("kfd_process")  # type: ignore[attr-defined]
    mm = MM(kernel)
    visible = sync.Completion("notifier_visible")
    run = ScenarioInstance()

    @run.thread("A")
    def create_process() -> None:
        process = notifier.get(kfd, mm)
        visible.complete()
        # pqm_init() fails: drop the reference; the free waits for a grace period
        notifier.put(process)

    run.thread("B")(lambda: _invalidate(mm, visible))
    run.finale = lambda: notifier.synchronize(kernel)
    run.check(tracker.check)
    run.check(lambda: kernel_clean(kernel))
    return run


SCENARIOS = (
    Scenario(
        "unregister-no-release",
        _unregister_no_release,
        "amdkfd v5.3 unwind: unregister_no_release + kfree while an invalidation walks the list (patch 09)",
        "use-after-free",
    ),
    Scenario(
        "get-put",
        _get_put,
        "the same flow with get/put: the free waits for the walker's grace period; no leak after synchronize",
        None,
    ),
)
