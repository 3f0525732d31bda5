"""Explorer scenarios: the open race of ``drivers.md`` section 5 under each scheme.

Every scenario has two model threads of one process and a finale:

* ``open`` (thread A) opens /dev/kfd; process creation fails at an injected
  late step (the first call of that step fails), so open returns -ENOMEM;
* the walker (thread B) walks the mm's notifier list at the same time:
  ``munmap`` (an invalidation, under the mmap lock) or ``young`` (page aging
  by reclaim through the rmap: ``clear_flush_young``, no mmap lock);
* the finale exits the mm and unloads the module (``synchronize``, then the
  workqueues drain), after which nothing may be left: no WARN, no bug in a
  deferred callback, every PASID and doorbell slice back in its pool, no
  process left, no lead-thread reference held.

``amdkfd-open-race-*`` fail ``kfd_init_apertures`` with a munmap walker, the
flow of patch 09's commit message; ``amdkfd-cwsr-race-*`` fail the CWSR
``vm_mmap`` with an aging walker (a munmap walker holds the mmap lock that
the failing ``vm_mmap`` waits for, so it cannot meet the unwind there). The
``legacy`` ones (scheme 5.3) are reported as use-after-free; ``5.4`` and ``get`` (5.13) are clean
under bounded exhaustive search. The 5.3 unwind also leaks the lead-thread
reference; the legacy scenarios leave that to the unit tests and exist to
show the use-after-free.

``amdkfd-evict-race-5.4`` is **(reading)** of the 5.4 code, not a documented
bug: amdgpu's eviction request (``kgd2kfd_schedule_evict_and_restore_process``)
looks the process up with a kref inside the table's SRCU read section and
schedules the eviction work *after* leaving it. ``release`` waits for that
read section, but its ``cancel_delayed_work_sync`` may come before the
schedule; if the request's ``kfd_unref_process`` then drops the last kref, the
release work frees the process while its eviction work is pending, and the
work (or the restore work it queues) touches freed memory.
"""

from __future__ import annotations

import contextlib
import functools

from mmu_notifier import MM, Kernel, NoMemoryError
from mmu_notifier.explore import Leak, Scenario, ScenarioInstance
from mmu_notifier.plugins import MMUNotifierOps
from mmu_notifier.scenarios import kernel_clean
from mmu_notifier_amdkfd import KfdDriver
from mmu_notifier_amdkfd.config import FaultPoint, KfdConfig, KfdFaults, Scheme
from mmu_notifier_amdkfd.faults import Step
from mmu_notifier_amdkfd.lifetime import Kfd


@functools.cache
def loaded(scheme: Scheme, failing: Step | None = None) -> tuple[KfdDriver, MMUNotifierOps]:
    """A driver whose ``failing`` step (if any) fails on its first call, and its ops, loaded once per process.

    Resolving hooks costs more than a schedule; every schedule's fresh kernel
    uses these ops through :meth:`KfdDriver.kfd`.
    """
    faults = KfdFaults.model_validate({failing: FaultPoint(nth=1)} if failing else {})
    config = KfdConfig(scheme=scheme, faults=faults)
    driver = KfdDriver(config)
    return driver, Kernel(frames=1).drivers.add(driver)


def check_clean(kernel: Kernel, kfd: Kfd, *, lead_thread_leak_ok: bool = False) -> None:
    """End-of-run check: no deferred-callback bug, no WARN, nothing kfd allocated is left."""
    kernel_clean(kernel)
    leaks = kfd.leaks()
    if lead_thread_leak_ok:
        leaks.pop("lead_threads", None)
    if leaks:
        raise Leak("; ".join(leaks.values()))


def _walk(mm: MM, address: int, walker: str) -> None:
    if walker == "munmap":
        mm.munmap(address, mm.page_size)
    else:
        mm.clear_flush_young(address)


def open_race(scheme: Scheme, failing: Step, walker: str) -> ScenarioInstance:
    """One execution: ``open`` fails at ``failing`` while ``walker`` walks the same mm's notifiers."""
    driver, ops = loaded(scheme, failing)
    kernel = Kernel(frames=64)
    kfd = driver.kfd(kernel, ops)
    mm = MM(kernel)
    address = mm.mmap(mm.page_size)
    mm.fault(address, write=True)
    run = ScenarioInstance()

    @run.thread("open")
    def open_kfd() -> None:
        with contextlib.suppress(NoMemoryError):
            kfd.kfd_create_process(mm)

    run.thread(walker)(lambda: _walk(mm, address, walker))

    def exit_and_unload() -> None:
        mm.exit()
        kfd.module_exit()

    run.finale = exit_and_unload
    run.check(lambda: check_clean(kernel, kfd, lead_thread_leak_ok=scheme == "5.3"))
    return run


def evict_race() -> ScenarioInstance:
    """One execution: amdgpu asks to evict the process while its mm exits (5.4)."""
    driver, ops = loaded("5.4")
    kernel = Kernel(frames=64)
    kfd = driver.kfd(kernel, ops)
    mm = MM(kernel)
    ring = mm.mmap(mm.page_size)
    kfd.kfd_create_process(mm)
    kfd.create_queue(mm, 0, ring, ring + mm.page_size)
    run = ScenarioInstance()
    run.thread("evict")(lambda: kfd.schedule_evict_and_restore_process(mm))
    run.thread("exit")(mm.exit)
    run.finale = kfd.module_exit
    run.check(lambda: check_clean(kernel, kfd))
    return run


def _scenario(label: str, scheme: Scheme, failing: Step, walker: str) -> Scenario:
    family = "open-race" if failing == "init_apertures" else "cwsr-race"
    legacy = scheme == "5.3"
    outcome = "use after free" if legacy else "clean"
    return Scenario(
        f"amdkfd-{family}-{label}",
        functools.partial(open_race, scheme, failing, walker),
        f"amdkfd {scheme}: {failing} fails in open while {walker} walks the notifiers ({outcome})",
        "use-after-free" if legacy else None,
    )


#: (failing step, walker) of the two open-race families
_RACES: tuple[tuple[Step, str], ...] = (("init_apertures", "munmap"), ("cwsr", "young"))
#: (name part, scheme): the names are those of the first release ("legacy" is 5.3, "get" 5.13), so they still replay
_SCHEMES: tuple[tuple[str, Scheme], ...] = (("legacy", "5.3"), ("5.4", "5.4"), ("get", "5.13"))

SCENARIOS: tuple[Scenario, ...] = (
    *(_scenario(label, scheme, failing, walker) for failing, walker in _RACES for label, scheme in _SCHEMES),
    Scenario(
        "amdkfd-evict-race-5.4",
        evict_race,
        "amdkfd 5.4 (reading): an eviction request schedules its work after release cancelled it",
        "use-after-free",
    ),
)
