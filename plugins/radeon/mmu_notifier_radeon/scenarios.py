"""Explorer scenarios for radeon: every bug of issue 14, each next to its fixed (clean) form.

Each flow is one function built with different kernels or switches, so the
buggy run and the clean run interleave exactly the same threads:

* ``exit-with-bound-bo`` (5.3: bug 1 of patch 08; 5.4: release with flags 0):
  the main thread of a process exits while a second thread submits a command
  buffer on a userptr BO, then exits too; the last ``mmput`` runs
  ``exit_mmap``, whose release must leave nothing of the mm in the GTT before
  the files are closed (``exit_mm`` runs before ``exit_files``). 5.3 only
  schedules the destroy work; 5.4 trylocks a non-blockable full range and
  refuses at the first node. Clean with ``release_blockable`` (5.5's release,
  which waits for the fences and unbinds);
* ``unguarded-free``: a process frees a plain (VRAM) GEM object while another
  creates, uses and frees a userptr BO; without the guard (patch 08 as
  posted) the first free dereferences ``bo->mn == NULL``;
* ``unload-with-empty-radeon-mn`` (5.3: bug 2 of patch 08): the last BO of a
  process is freed while the CPU invalidates its memory, then the module is
  unloaded while the process lives on. 5.3 never unregisters the emptied
  ``radeon_mn``, so its ops stay on the live mm and the next invalidation
  calls into the unloaded module: a use after free of the module.
  5.4's last put unlinks it: clean;
* ``destroy-vs-release`` (5.3, a reading of the code): a process that freed
  its last BO exits; the destroy work that release scheduled can run before
  ``__mmu_notifier_release`` unlinked the emptied ``radeon_mn``, so its
  ``mmu_notifier_unregister`` calls release again, which re-queues the
  running work, and the first run kfrees the ``radeon_mn`` with its work
  queued again (debugobjects' "free active object"; the second run would
  touch the freed ``radeon_mn``). In 5.4 the last put unlinked it long
  before: clean;
* ``register-failure-leak`` (5.4, a reading of the code): fault injection
  makes the node allocation of a registration fail after its ``get``; 5.4
  returns -ENOMEM without the ``put`` and the guard makes the BO's later
  unregister a no-op, so the ``radeon_mn`` is never freed and the mm's pin
  never dropped (the leak check names it). Clean with ``register_failure_put``;
* ``cs-vs-madvise`` (5.4, the race 5.5 documents as unfixable in this
  design): ``MADV_DONTNEED`` holds the mmap lock only for read, so a command
  submission can pin the old pages again between the invalidation's start
  (which evicted the BO) and the page-table change: a stale GTT translation.
  This is the kernel's behaviour, not a model bug. The same flow with
  ``munmap`` (mmap lock for write, which excludes submission) is clean.

* 5.5 (``scheme = "5.5"``, one interval notifier per BO): the exit flow is
  clean (the core's interval teardown is a blockable RELEASE range, so every
  bound BO is unbound before ``exit_mmap``: bug 1 of patch 08 and 5.4's
  flags-0 release are gone); the unload after the last close is
  clean (the last remove leaves nothing of radeon on the mm); the
  ``cs-vs-madvise`` race stays, exactly as 5.5's FIXME says.

Every run ends with the files closed and the module exit (``radeon_exit``,
then the workqueue flushed and ``synchronize``); the checks then demand no
WARN, no bug in a deferred callback and every ``radeon_mn`` freed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from mmu_notifier import MM, Kernel, synchronize
from mmu_notifier.errors import KernelError
from mmu_notifier.explore import Leak, Scenario, ScenarioInstance, Violation
from mmu_notifier.scenarios import kernel_clean
from mmu_notifier_radeon.config import RadeonConfig
from mmu_notifier_radeon.device import ANONONLY, REGISTER, VALIDATE, Radeon, RadeonDevice, RadeonFile

USERPTR = ANONONLY | REGISTER | VALIDATE


def _world(scheme: str = "5.4", **switches: Any) -> tuple[Kernel, Radeon, MM]:
    """A fresh kernel with the radeon module loaded, and one live process."""
    from mmu_notifier_radeon import RadeonDriver

    kernel = Kernel(frames=64)
    config = RadeonConfig(scheme=scheme, gtt_pages=16, **switches)
    driver = RadeonDriver(config)
    kernel.drivers.add(driver)
    return kernel, driver.radeon(kernel), MM(kernel)


def _bound_bo(module: Radeon, mm: MM, pages: int = 2) -> tuple[RadeonDevice, RadeonFile, int, int]:
    """A process with a registered userptr BO over ``pages`` fresh pages, bound in the GTT."""
    rdev = module.devices[0]
    file = rdev.open(mm)
    addr = mm.mmap(pages * mm.page_size)
    gem = rdev.gem_userptr(file, addr, pages * mm.page_size, USERPTR)
    return rdev, file, addr, gem


def _module_exit(module: Radeon) -> None:
    """``radeon_exit`` (files closed first), the destroy work and every pending free done, then the module is gone.

    As in the kernel the unload goes ahead with a subscription still linked
    on an mm; 5.3's emptied ``radeon_mn`` then shows at the next callback into
    the unloaded module (a use after free of the module).
    """
    module.radeon_exit()
    module.kernel.system_wq.flush()
    synchronize(module.kernel)
    module.kernel.drivers.unload(module.driver)


def _checks(run: ScenarioInstance, module: Radeon) -> None:
    """Kernel clean and every ``radeon_mn`` freed, after the module exit."""
    kernel = module.kernel

    run.check(lambda: kernel_clean(kernel))

    @run.check
    def every_radeon_mn_freed() -> None:
        if module.rmns:
            raise Leak(f"{len(module.rmns)} radeon_mn never freed after the module exit and synchronize: "
                       f"{', '.join(sorted(module.rmns.values()))}")


def exit_with_bound_bo(scheme: str, release_blockable: bool) -> ScenarioInstance:
    """The process exits (two threads, one submitting) with a userptr BO registered and bound."""
    _, module, mm = _world(scheme, release_blockable=release_blockable, fence_latency=1)
    rdev, file, _, gem = _bound_bo(module, mm)
    mm.mmget()  # the second thread's reference on the shared mm
    run = ScenarioInstance()
    run.thread("exit")(mm.exit)

    @run.thread("gpu-thread")
    def gpu_thread() -> None:
        try:
            rdev.cs(file, [(gem, True)])
        finally:
            mm.mmput()

    stale: dict[int, int] = {}

    def finale() -> None:
        stale.update(module.translations(mm))  # after exit_mm of every thread, before exit_files
        rdev.close(file)
        _module_exit(module)

    run.finale = finale

    @run.check
    def exit_coherence() -> None:
        if stale:
            shown = ", ".join(f"{vpn << mm.page_shift:#x}->{pfn}" for vpn, pfn in sorted(stale.items()))
            raise Violation(f"[exit-coherence] mm {mm.id} exited but the GTT still maps {len(stale)} of its "
                            f"page(s) ({shown}) until the files close: release did not unbind the BOs")

    _checks(run, module)
    return run


def unguarded_free(guard: bool) -> ScenarioInstance:
    """A plain GEM object freed while another process uses a userptr BO."""
    kernel, module, mm = _world("5.4", unpaired_unregister_guard=guard, fence_latency=0)
    other = MM(kernel)
    rdev = module.devices[0]
    run = ScenarioInstance()

    @run.thread("vram")
    def vram() -> None:
        file = rdev.open(mm)
        rdev.gem_close(file, rdev.gem_create(file, mm.page_size))
        rdev.close(file)

    @run.thread("userptr")
    def userptr() -> None:
        file = rdev.open(other)
        addr = other.mmap(other.page_size)
        gem = rdev.gem_userptr(file, addr, other.page_size, USERPTR)
        rdev.cs(file, [(gem, False)])
        rdev.close(file)

    def finale() -> None:
        _module_exit(module)
        mm.exit()
        other.exit()

    run.finale = finale
    _checks(run, module)
    return run


def cs_vs_invalidation(how: str, scheme: str = "5.4") -> ScenarioInstance:
    """A command submission re-validating a userptr BO races an invalidation of one of its pages."""
    _, module, mm = _world(scheme, fence_latency=0)
    rdev, file, addr, gem = _bound_bo(module, mm)
    run = ScenarioInstance()

    @run.thread("cs")
    def cs() -> None:
        with contextlib.suppress(KernelError):  # the page is gone (munmap): EFAULT, as userspace sees it
            rdev.cs(file, [(gem, False)])

    if how == "madvise":
        run.thread("madvise")(lambda: mm.madvise_dontneed(addr, mm.page_size))
    else:
        run.thread("munmap")(lambda: mm.munmap(addr, mm.page_size))
    stale: list[str] = []

    def finale() -> None:
        for vpn, pfn in sorted(module.translations(mm).items()):
            pte = mm.page_table.lookup(vpn)
            if pte is None or pte.pfn != pfn:
                cpu = f"frame {pte.pfn}" if pte is not None else "nothing"
                stale.append(f"{vpn << mm.page_shift:#x}: GTT frame {pfn}, CPU {cpu}")
        rdev.close(file)
        mm.exit()
        _module_exit(module)

    run.finale = finale

    @run.check
    def coherence() -> None:
        if stale:
            raise Violation(f"[coherence] stale GTT translation(s) after the invalidation ended: {'; '.join(stale)}")

    _checks(run, module)
    return run


def unload_after_last_close(scheme: str) -> ScenarioInstance:
    """A process frees its last userptr BO while the CPU invalidates its memory; then the module is unloaded."""
    _, module, mm = _world(scheme, fence_latency=0)
    rdev, file, addr, gem = _bound_bo(module, mm)
    run = ScenarioInstance()

    @run.thread("client")
    def client() -> None:
        rdev.cs(file, [(gem, True)])
        rdev.close(file)

    run.thread("cpu")(lambda: mm.madvise_dontneed(addr, mm.page_size))

    def finale() -> None:
        _module_exit(module)  # the process still runs: its mm is live
        mm.munmap(addr, 2 * mm.page_size)  # calls into the unloaded module if anything was left linked
        mm.exit()

    run.finale = finale
    _checks(run, module)
    return run


def exit_after_last_close(scheme: str) -> ScenarioInstance:
    """A process that freed its last userptr BO exits; in 5.3 its emptied radeon_mn is still registered."""
    _, module, mm = _world(scheme, fence_latency=0)
    rdev, file, _, gem = _bound_bo(module, mm)
    rdev.cs(file, [(gem, True)])
    rdev.close(file)
    run = ScenarioInstance()
    run.thread("exit")(mm.exit)
    run.finale = lambda: _module_exit(module)
    _checks(run, module)
    return run


def register_failure(put_on_failure: bool) -> ScenarioInstance:
    """The node allocation of a registration fails after the ``get``; the process goes on, exits, files close."""
    kernel, module, mm = _world("5.4", register_failure_put=put_on_failure, fence_latency=0)
    kernel.faults.inject("radeon.node_alloc", nth=1)
    rdev = module.devices[0]
    file = rdev.open(mm)
    addr = mm.mmap(2 * mm.page_size)
    run = ScenarioInstance()

    @run.thread("client")
    def client() -> None:
        with contextlib.suppress(KernelError):  # ENOMEM: the ioctl fails, the BO is freed again
            rdev.gem_userptr(file, addr, mm.page_size, USERPTR)
        gem = rdev.gem_userptr(file, addr + mm.page_size, mm.page_size, USERPTR)
        rdev.cs(file, [(gem, True)])

    run.thread("cpu")(lambda: mm.madvise_dontneed(addr, 2 * mm.page_size))

    def finale() -> None:
        mm.exit()  # exit_mm, then exit_files
        rdev.close(file)
        _module_exit(module)

    run.finale = finale
    _checks(run, module)

    @run.check
    def mm_freed() -> None:
        if not mm.freed:
            raise Leak(f"mm {mm.id} never freed: mm_count={mm.mm_count.value} (a registration pin never dropped)")

    return run


Build = Callable[[], ScenarioInstance]


def _scenario(name: str, build: Build, description: str, expect: str | None = None) -> Scenario:
    return Scenario(name, build, description, expect, version=1)


SCENARIOS: tuple[Scenario, ...] = (
    _scenario(
        "radeon-5.3-exit-with-bound-bo",
        functools.partial(exit_with_bound_bo, "5.3", False),
        "5.3 radeon (patch 08, bug 1): release only schedules the destroy work; the GTT keeps pages of the exited mm",
        "invariant",
    ),
    _scenario(
        "radeon-5.4-exit-with-bound-bo",
        functools.partial(exit_with_bound_bo, "5.4", False),
        "5.4 radeon (reading): release passes flags 0, so it refuses at the first node; the GTT keeps pages of "
        "the exited mm",
        "invariant",
    ),
    _scenario(
        "radeon-release-blockable-exit-with-bound-bo",
        functools.partial(exit_with_bound_bo, "5.4", True),
        "radeon with 5.5's blockable release: it waits for the fences and unbinds every BO before exit_mmap",
    ),
    _scenario(
        "radeon-unguarded-free",
        functools.partial(unguarded_free, False),
        "patch 08 as posted: freeing a BO that was never registered dereferences bo->mn == NULL",
        "exception",
    ),
    _scenario(
        "radeon-guarded-free",
        functools.partial(unguarded_free, True),
        "5.4 with the unpaired-unregister guard: freeing a plain BO does nothing in radeon_mn",
    ),
    _scenario(
        "radeon-5.3-unload-with-empty-radeon-mn",
        functools.partial(unload_after_last_close, "5.3"),
        "5.3 radeon (patch 08, bug 2): the radeon_mn stays registered after its last BO; the module unload leaves "
        "its ops on a live mm; the next invalidation calls into the unloaded module (use after free)",
        "use-after-free",
    ),
    _scenario(
        "radeon-unload-after-last-close",
        functools.partial(unload_after_last_close, "5.4"),
        "5.4 radeon: the last BO's put unlinks the radeon_mn; synchronize and the unload leave nothing behind",
    ),
    _scenario(
        "radeon-5.3-destroy-vs-release",
        functools.partial(exit_after_last_close, "5.3"),
        "5.3 radeon (reading): the destroy work runs before teardown unlinked the radeon_mn; its unregister calls "
        "release again, which re-queues the running work, which then frees the radeon_mn with its work queued",
        "use-after-free",
    ),
    _scenario(
        "radeon-exit-after-last-close",
        functools.partial(exit_after_last_close, "5.4"),
        "5.4 radeon: the last BO's put unlinked the radeon_mn; the exit has nothing of radeon to release",
    ),
    _scenario(
        "radeon-5.4-register-failure-leak",
        functools.partial(register_failure, False),
        "5.4 radeon (reading): a failed node allocation after the get returns ENOMEM without the put; the guard "
        "makes the BO's unregister a no-op, so the radeon_mn and the mm pin leak",
        "leak",
    ),
    _scenario(
        "radeon-register-failure-put",
        functools.partial(register_failure, True),
        "radeon with the put on a failed node allocation: nothing leaks",
    ),
    _scenario(
        "radeon-cs-vs-madvise",
        functools.partial(cs_vs_invalidation, "madvise"),
        "5.4 radeon (kernel behaviour, documented in 5.5): a submission pins the old pages between MADV_DONTNEED's "
        "start and its page-table change",
        "invariant",
    ),
    _scenario(
        "radeon-5.5-exit-with-bound-bo",
        functools.partial(exit_with_bound_bo, "5.5", False),
        "5.5 radeon (interval notifiers): the core's exit teardown sends each BO's notifier a blockable RELEASE "
        "range; it waits for the fences and unbinds before exit_mmap (the 5.3/5.4 stale GTT is gone)",
    ),
    _scenario(
        "radeon-5.5-unload-after-last-close",
        functools.partial(unload_after_last_close, "5.5"),
        "5.5 radeon: the last BO's remove leaves nothing of radeon on the live mm; the unload is safe",
    ),
    _scenario(
        "radeon-5.5-cs-vs-madvise",
        functools.partial(cs_vs_invalidation, "madvise", "5.5"),
        "5.5 radeon (kernel behaviour, its FIXME): the conversion kept get_user_pages outside read_begin/read_retry, "
        "so a submission still pins the old pages between MADV_DONTNEED's invalidate and its page-table change",
        "invariant",
    ),
    _scenario(
        "radeon-cs-vs-munmap",
        functools.partial(cs_vs_invalidation, "munmap"),
        "5.4 radeon: munmap holds the mmap lock for write, which excludes submission: no stale GTT translation",
    ),
)
