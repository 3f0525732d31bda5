"""Explorer scenarios for gru: the v5.3 races of patch 04 and the same flows under v5.4.

Each flow is built twice from one function, once per driver build, so the
v5.3 run and the v5.4 run interleave exactly the same threads:

* ``drop-vs-register``: thread ``drop`` closes the GSEG of the mm's only
  thread state, dropping the last GMS reference on a path that holds no mmap
  lock (``gru_drop_mmu_notifier`` takes none and asks for none); thread
  ``register`` creates a second thread state (mmap lock for write) and closes
  it again. v5.3: the register can find the GMS whose refcount the drop
  already took to zero, re-reference it, and use it after the drop freed it.
* ``release-vs-drop``: thread ``exit`` tears the mm down (release), thread
  ``drop`` drops the last thread state, thread ``reclaim`` runs an rmap
  invalidation of the mm (no mm reference needed). v5.3: the drop sees
  ``ms_released`` and frees at once, with no grace period, while teardown's
  unlink or the invalidation still holds the GMS. (The skipped unregister
  also leaks the mm pin; the unit tests show that, deterministically.)
* ``dropin-vs-invalidate`` (v5.4, call-OS and interrupt dropins): a GRU
  instruction takes a TLB miss while reclaim invalidates the page; afterwards
  every device translation must match the CPU page table and no range may
  still count as in flight.

Every run ends with the module-exit ``synchronize``; the checks then demand
no WARN, no bug in a deferred callback and every GMS freed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from mmu_notifier import MM, Event, Kernel, Range, notifier
from mmu_notifier.explore import Leak, Scenario, ScenarioInstance, Violation
from mmu_notifier.scenarios import kernel_clean
from mmu_notifier_gru import GruConfig, GruDriver
from mmu_notifier_gru.device import GruDriverBase

Build = Callable[[], ScenarioInstance]


def _world(scheme: str, dropin_mode: str = "call_os") -> tuple[Kernel, GruDriverBase, MM]:
    """A fresh kernel with a small GRU machine loaded, and one live mm."""
    kernel = Kernel(frames=64)
    config = GruConfig(scheme=scheme, dropin_mode=dropin_mode, chiplets=1, contexts_per_chiplet=2, tlb_entries=8)
    driver: GruDriverBase = GruDriver(config)
    kernel.drivers.add(driver)
    return kernel, driver, MM(kernel)


def _finish(run: ScenarioInstance, kernel: Kernel, driver: GruDriverBase) -> None:
    """Module exit as the finale; then: kernel clean and every GMS freed."""
    run.finale = lambda: driver.gru_exit(kernel)

    run.check(lambda: kernel_clean(kernel))

    @run.check
    def every_gms_freed() -> None:
        allocated, freed = driver.stats["gms_alloc"], driver.stats["gms_free"]
        if allocated != freed:
            raise Leak(f"{allocated - freed} gru_mm_struct(s) never freed after synchronize")


def drop_vs_register(scheme: str) -> ScenarioInstance:
    """The last drop of a GMS against a register that looks the GMS up."""
    kernel, driver, mm = _world(scheme)
    first, second = driver.gru_file_mmap(mm), driver.gru_file_mmap(mm)
    driver.gru_set_context_option(mm, first.start)
    run = ScenarioInstance()

    @run.thread("drop")
    def drop() -> None:
        driver.gru_vma_close(first)

    @run.thread("register")
    def register() -> None:
        driver.gru_set_context_option(mm, second.start)
        driver.gru_vma_close(second)

    _finish(run, kernel, driver)
    return run


def release_vs_drop(scheme: str) -> ScenarioInstance:
    """mm teardown (release) against the last drop, with an rmap invalidation walking the list."""
    kernel, driver, mm = _world(scheme)
    gseg = driver.gru_file_mmap(mm)
    driver.gru_set_context_option(mm, gseg.start)
    data = mm.mmap(mm.page_size)
    run = ScenarioInstance()
    run.thread("exit")(mm.exit)

    @run.thread("drop")
    def drop() -> None:
        driver.gru_vma_close(gseg)

    @run.thread("reclaim")
    def reclaim() -> None:
        rng = Range(mm, data, data + mm.page_size, Event.CLEAR)
        notifier.invalidate_range_start(rng)
        notifier.invalidate_range_end(rng)

    _finish(run, kernel, driver)
    return run


def dropin_vs_invalidate(dropin_mode: str) -> ScenarioInstance:
    """A device TLB miss on a page that reclaim invalidates at the same time (v5.4)."""
    kernel, driver, mm = _world("5.4", dropin_mode)
    data = mm.mmap(mm.page_size)
    mm.fault(data, write=True)
    gseg = driver.gru_file_mmap(mm)
    gts = driver.gru_set_context_option(mm, gseg.start)
    driver.gru_fault(gts)
    run = ScenarioInstance()
    run.thread("device")(lambda: driver.gru_instruction(gts, data))
    run.thread("reclaim")(lambda: mm.reclaim(data))

    def coherent_then_exit() -> None:
        for vpn, pfn in driver.device_translations(mm).items():
            pte = mm.page_table.lookup(vpn)
            if pte is None or pte.pfn != pfn:
                raise Violation(f"device TLB maps page {vpn:#x} to frame {pfn}, the CPU to {pte}: stale dropin")
        assert gts.ts_gms is not None
        if gts.ts_gms.ms_range_active.value:
            raise Violation(f"ms_range_active is {gts.ts_gms.ms_range_active.value} with no range in flight")
        driver.gru_exit(kernel)

    _finish(run, kernel, driver)
    run.finale = coherent_then_exit
    return run


def _scenario(name: str, build: Build, description: str, expect: str | None = None) -> Scenario:
    return Scenario(name, build, description, expect, version=1)


SCENARIOS: tuple[Scenario, ...] = (
    _scenario(
        "gru-legacy-drop-vs-register",
        functools.partial(drop_vs_register, "5.3"),
        "v5.3 gru: a register finds and re-references the GMS a concurrent last drop is freeing",
        "use-after-free",
    ),
    _scenario(
        "gru-drop-vs-register",
        functools.partial(drop_vs_register, "5.4"),
        "v5.4 gru: the same flow with get_locked/put: a dying GMS is unlinked before anyone can find it",
    ),
    _scenario(
        "gru-legacy-release-vs-drop",
        functools.partial(release_vs_drop, "5.3"),
        "v5.3 gru: release sets ms_released, the last drop frees with no grace period under a walker",
        "use-after-free",
    ),
    _scenario(
        "gru-release-vs-drop",
        functools.partial(release_vs_drop, "5.4"),
        "v5.4 gru: no release callback; the last put's free waits for every walker",
    ),
    _scenario(
        "gru-dropin-vs-invalidate",
        functools.partial(dropin_vs_invalidate, "call_os"),
        "v5.4 gru: a call-OS dropin against reclaim of the page: no stale device translation",
    ),
    _scenario(
        "gru-intr-dropin-vs-invalidate",
        functools.partial(dropin_vs_invalidate, "interrupt"),
        "v5.4 gru: an interrupt-path dropin against reclaim of the page: no stale device translation",
    ),
)
