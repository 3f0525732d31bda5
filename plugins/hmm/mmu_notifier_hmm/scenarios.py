"""Explorer scenarios of the ``hmm`` plugin: the 5.3 use-after-free, its absence in 5.4, device coherence.

Lifetime flows, each run under four schemes (5.4 get/put; 5.3 with the
SRCU-deferred free; 5.3 before that fix; 5.5's shared list notifier):

* ``hmm-<scheme>-invalidate``: thread ``mirror`` registers a device mirror
  (creating the struct hmm) and unregisters it, dropping the last reference;
  thread ``reclaim`` swaps a page of the same mm out once the mirror is
  visible, so its invalidation walks the notifier list concurrently;
* ``hmm-<scheme>-exit``: the same, but the other thread is the process
  exiting, whose teardown calls every subscription's ``release``.

The unfixed 5.3 scheme frees the struct hmm while the walker may still hold
it (``expect = "use-after-free"``); the other two must stay clean, and after
the module-exit ``synchronize`` every mm pin they took must be gone.

Device coherence (5.4): thread ``device`` faults two pages into a model
device with the documented retry loop while thread ``cpu`` swaps one out and
migrates the other. At the end every device translation must be backed by
the CPU page table. ``hmm-device-coherence`` uses the default collision
check; ``hmm-device-range-valid`` the documented loop verbatim, which maps a
frame the CPU freed when a whole invalidation fits between ``hmm_range_fault``
and the ``hmm_range_valid`` check (``expect = "invariant"``).

Device coherence (5.5): ``hmm-5.5-device-coherence`` runs the same flow on
5.5's interval notifiers (:mod:`mmu_notifier_hmm.interval`);
``hmm-5.5-device-range-valid`` runs it with the config that shows the 5.4
bug, which 5.5 ignores: ``mmu_interval_read_retry`` under ``svmm->mutex``
sees every invalidation since ``read_begin``, so it stays clean.
"""

from __future__ import annotations

from collections.abc import Callable

from mmu_notifier import MM, Kernel, sync, synchronize
from mmu_notifier.explore import Scenario, ScenarioInstance, Violation
from mmu_notifier.scenarios import kernel_clean
from mmu_notifier_hmm import HmmDriver
from mmu_notifier_hmm.config import HmmConfig
from mmu_notifier_hmm.device import DeviceMirror

#: Frames of a scenario's kernel: a handful, so freed frames are reused at once.
FRAMES = 16


def world(config: HmmConfig, pages: int) -> tuple[Kernel, HmmDriver, MM, int]:
    """A kernel with the driver loaded and an mm with ``pages`` pages faulted in; returns their base address."""
    kernel = Kernel(frames=FRAMES)
    driver = HmmDriver(config)
    kernel.drivers.add(driver)
    mm = MM(kernel)
    base = mm.mmap(pages * mm.page_size)
    for i in range(pages):
        mm.fault(base + i * mm.page_size, write=True)
    return kernel, driver, mm, base


def lifetime(config: HmmConfig, racer: str) -> Callable[[], ScenarioInstance]:
    """The builder of a lifetime flow: a mirror comes and goes while ``racer`` (reclaim or exit) walks."""

    def build() -> ScenarioInstance:
        kernel, driver, mm, base = world(config, 1)
        visible = sync.Completion("mirror_visible")
        run = ScenarioInstance()

        @run.thread("mirror")
        def mirror() -> None:
            device = DeviceMirror(mm, config)
            device.bind()
            visible.complete()
            device.unbind()

        @run.thread(racer)
        def race() -> None:
            visible.wait()
            if racer == "reclaim":
                mm.reclaim(base)
            else:
                mm.exit()

        def pins_dropped() -> None:
            # the users' own pin is left only while the process lives
            want = 1 if racer == "reclaim" else 0
            if mm.mm_count.value != want or driver.back_pointers:
                raise Violation(
                    f"after synchronize mm_count is {mm.mm_count.value} (want {want}) "
                    f"and {len(driver.back_pointers)} back pointer(s) remain"
                )

        run.finale = lambda: synchronize(kernel)
        run.check(lambda: kernel_clean(kernel))
        run.check(pins_dropped)
        return run

    return build


def coherence(config: HmmConfig) -> Callable[[], ScenarioInstance]:
    """The builder of the device coherence flow under ``config``."""

    def build() -> ScenarioInstance:
        kernel, _, mm, base = world(config, 2)
        device = DeviceMirror(mm, config)
        device.bind()
        run = ScenarioInstance()

        @run.thread("device")
        def fault() -> None:
            device.fault(base, base + 2 * mm.page_size)

        @run.thread("cpu")
        def cpu() -> None:
            mm.reclaim(base)
            mm.migrate(base + mm.page_size)

        def coherent() -> None:
            problems = device.incoherent()
            if problems:
                raise Violation("stale device translation: " + "; ".join(problems))

        run.check(lambda: kernel_clean(kernel))
        run.check(coherent)
        return run

    return build


#: scenario name part (unchanged since the first release, so old names still replay) -> config
_SCHEMES = {
    "getput": (HmmConfig(scheme="5.4"), None),
    "legacy": (HmmConfig(scheme="5.3"), None),
    "legacy-unfixed": (HmmConfig(scheme="5.3", legacy_srcu_fix=False), "use-after-free"),
    "5.5": (HmmConfig(scheme="5.5"), None),
}

_LIFETIME = tuple(
    Scenario(
        f"hmm-{scheme}-{flow}",
        lifetime(config, racer),
        f"hmm ({scheme}): a mirror registers and unregisters while {what}",
        expect,
    )
    for scheme, (config, expect) in _SCHEMES.items()
    for flow, racer, what in (
        ("invalidate", "reclaim", "reclaim invalidates a page of the mm"),
        ("exit", "exit", "the process exits (release)"),
    )
)

SCENARIOS: tuple[Scenario, ...] = (
    *_LIFETIME,
    Scenario(
        "hmm-device-coherence",
        coherence(HmmConfig()),
        "a device fault with the retry loop and a sequence check races reclaim and migration: stays coherent",
    ),
    Scenario(
        "hmm-device-range-valid",
        coherence(HmmConfig(collision_check="range_valid")),
        "the documented 5.4 retry loop (hmm_range_valid only) races reclaim: maps a freed frame",
        "invariant",
    ),
    Scenario(
        "hmm-5.5-device-coherence",
        coherence(HmmConfig(scheme="5.5")),
        "5.5: the device fault on a temporary interval notifier (read_begin / hmm_range_fault / read_retry under "
        "svmm->mutex) races reclaim and migration: stays coherent",
    ),
    Scenario(
        "hmm-5.5-device-range-valid",
        coherence(HmmConfig(scheme="5.5", collision_check="range_valid")),
        "the flow that maps a freed frame under 5.4's documented loop, in 5.5: read_retry catches the "
        "invalidation that fits between the walk and the check; clean",
    ),
)
