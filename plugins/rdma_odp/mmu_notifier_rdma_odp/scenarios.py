"""Explorer scenarios for ``rdma_odp``: each historical bug of the ODP code, and the same flow fixed.

Every flow is one function run under several configurations, so the buggy
and the fixed runs interleave exactly the same threads:

* H-1 ``nested-vs-dereg`` ("RDMA/odp: Use mmu_interval_notifier_insert()",
  5.0-5.4, both schemes): ``zap`` runs ``MADV_DONTNEED`` whose zap splits a
  huge page, so a second invalidation starts inside the first in the same
  task; ``dereg`` deregisters another MR and waits for ``umem_rwsem`` for
  write between the two ``down_read``: the nested one queues behind the
  waiting writer, which waits for the outer one. The fixed form is the same
  flow without the split (the kernel's fix, 5.5, removed ``umem_rwsem``).
* H-2 ``oom-reaper`` ("RDMA/odp: Fix missed unlock in non-blocking
  invalidate_start"): the OOM reaper's non-blockable range overlaps an MR
  and is refused; with the switch the reaper returns holding ``umem_rwsem``.
* H-3 ``implicit-fault-vs-exit`` ("RDMA/odp: Ensure the mm is still alive
  before creating an implicit child", Fixes patch 06): the HCA faults on an
  implicit MR while the process exits; without ``mmget_not_zero`` the child
  registers on the dead mm (the kernel's ``BUG_ON``). 5.3 is immune.
* H-4 ``double-leaf-free`` ("RDMA/odp: Lift umem_mutex out of
  ib_umem_odp_unmap_dma_pages()"): two invalidations empty one implicit
  child; with the unlocked test both count and queue its free, and the
  parent's teardown waits for ``num_leaf_free`` for ever (a deadlock with no
  owner; in other schedules the second invalidation reads ``mr->parent``
  after the queued free cleared it, the kernel's NULL dereference).
* H-6 ``put-outside-rwsem`` (a counterfactual, **no kernel shipped it**):
  the last put after ``up_write`` lets an invalidation start with
  ``users == 1`` and end with ``users == 0``, returning with the lock held.
* ``literal-release-tail`` (reading, no commit): 5.4's ``up_write`` after
  ``mmu_notifier_put`` with nothing holding off the deferred free.
* ``fault-vs-invalidate`` and ``implicit-fault-vs-invalidate``: an HCA
  fault racing an invalidation of its page never leaves a stale MTT.

Every run ends with module exit (``ib_uverbs_cleanup``); the checks then
demand no WARN, no bug in a deferred callback and every object freed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from mmu_notifier import MM, Kernel, KernelError, synchronize
from mmu_notifier.explore import Leak, Scenario, ScenarioInstance, Violation
from mmu_notifier.scenarios import kernel_clean
from mmu_notifier_rdma_odp import RdmaOdpConfig, RdmaOdpDriver
from mmu_notifier_rdma_odp.device import IbUcontext, Mlx5Device

Build = Callable[[], ScenarioInstance]
PAGE = 4096


def _world(scheme: str = "5.4", **switches: Any) -> tuple[Kernel, RdmaOdpDriver, MM, Mlx5Device, IbUcontext]:
    """A fresh kernel with the driver loaded, one live process and a verbs context on one device."""
    kernel = Kernel(frames=64)
    driver = RdmaOdpDriver(RdmaOdpConfig(scheme=scheme, implicit_chunk_size=1 << 20, **switches))
    kernel.drivers.add(driver)
    mm = MM(kernel)
    device = Mlx5Device(driver, "mlx5_0")
    return kernel, driver, mm, device, driver.open(device, mm)


def _finish(run: ScenarioInstance, kernel: Kernel, driver: RdmaOdpDriver, contexts: list[IbUcontext],
            before: Callable[[], None] | None = None) -> None:
    """Finale: close every context, module exit; then the kernel is clean and everything was freed."""

    def finale() -> None:
        if before is not None:
            before()
        for context in contexts:
            context.close()
        driver.ib_uverbs_cleanup(kernel)

    run.finale = finale

    run.check(lambda: kernel_clean(kernel))

    @run.check
    def everything_freed() -> None:
        stats = driver.stats
        for what in ("per_mm", "umem"):
            if stats[f"{what}_alloc"] != stats[f"{what}_free"]:
                raise Leak(f"{stats[f'{what}_alloc'] - stats[f'{what}_free']} {what} object(s) never freed")


def _device_fault(device: Mlx5Device, mr: Any, address: int, write: bool = True) -> None:
    """One HCA fault; the errors a fault may legitimately end with (EAGAIN, EINVAL, EFAULT) are fine."""
    with contextlib.suppress(KernelError):
        device.page_fault(mr, address, write)


def _coherent(mm: MM, device: Mlx5Device) -> None:
    """Every MTT the HCA can reach names the frame the CPU maps at that address."""
    for vpn, pfn in device.translations(mm).items():
        pte = mm.page_table.lookup(vpn)
        if pte is None or pte.pfn != pfn:
            raise Violation(f"{device.name} maps page {vpn:#x} to frame {pfn}, the CPU to {pte}: stale MTT")


# -- H-1 ---------------------------------------------------------------------------------


def nested_vs_dereg(scheme: str, split_huge_page: bool) -> ScenarioInstance:
    """A zap that nests a THP-split invalidation, against the deregistration of another MR."""
    kernel, driver, mm, device, ctx = _world(scheme)
    data = mm.mmap(2 * PAGE)
    other = mm.mmap(PAGE)
    mr = ctx.reg_mr(data, 2 * PAGE)
    victim = ctx.reg_mr(other, PAGE)
    device.page_fault(mr, data, True)
    run = ScenarioInstance()
    run.thread("zap")(lambda: mm.madvise_dontneed(data, PAGE, split_huge_page=split_huge_page))
    run.thread("dereg")(lambda: ctx.dereg_mr(victim))
    _finish(run, kernel, driver, [ctx])
    return run


# -- H-2 ---------------------------------------------------------------------------------


def oom_reaper(missed_unlock: bool) -> ScenarioInstance:
    """The OOM reaper's non-blockable range overlaps an MR; afterwards the MR is deregistered."""
    kernel, driver, mm, device, ctx = _world(bug_missed_unlock=missed_unlock)
    data = mm.mmap(PAGE)
    mr = ctx.reg_mr(data, PAGE)
    device.page_fault(mr, data, True)
    run = ScenarioInstance()
    run.thread("reaper")(mm.oom_reap)
    _finish(run, kernel, driver, [ctx])
    return run


# -- H-3 ---------------------------------------------------------------------------------


def implicit_fault_vs_exit(scheme: str, without_mmget: bool) -> ScenarioInstance:
    """An HCA fault on an implicit MR (creating a child) against the owner's exit."""
    kernel, driver, mm, device, ctx = _world(scheme, bug_child_without_mmget=without_mmget)
    data = mm.mmap(PAGE)
    imr = ctx.reg_implicit_mr()
    run = ScenarioInstance()
    run.thread("exit")(lambda: driver.process_exit(mm))
    run.thread("hca")(lambda: _device_fault(device, imr, data))
    _finish(run, kernel, driver, [ctx])
    return run


# -- H-4 ---------------------------------------------------------------------------------


def double_leaf_free(scheme: str, unmap_takes_mutex: bool) -> ScenarioInstance:
    """Two invalidations of the only mapped page of an implicit child both empty it."""
    kernel, driver, mm, device, ctx = _world(scheme, bug_unmap_takes_umem_mutex=unmap_takes_mutex)
    data = mm.mmap(PAGE)
    imr = ctx.reg_implicit_mr()
    device.page_fault(imr, data, True)
    run = ScenarioInstance()
    run.thread("zap1")(lambda: mm.madvise_dontneed(data, PAGE))
    run.thread("zap2")(lambda: mm.madvise_dontneed(data, PAGE))
    _finish(run, kernel, driver, [ctx])
    return run


# -- H-6 and the literal release tail ------------------------------------------------------


def put_vs_invalidation(put_outside: bool, then_synchronize: bool = False) -> ScenarioInstance:
    """The last umem of the mm is deregistered while an invalidation of another range runs.

    With ``then_synchronize`` the invalidating task goes on to wait for a
    grace period (as a module unload would), so the per_mm is freed while the
    task still holds its ``umem_rwsem``: the lockdep check on freed memory
    (``debug_check_no_locks_freed``) reports it, and the task re-raises what
    the deferred free recorded.
    """
    kernel, driver, mm, _device, ctx = _world(bug_put_outside_rwsem=put_outside)
    data = mm.mmap(PAGE)
    other = mm.mmap(PAGE)
    mm.fault(other, write=True)
    mr = ctx.reg_mr(data, PAGE)
    run = ScenarioInstance()

    @run.thread("cpu")
    def cpu() -> None:
        mm.madvise_dontneed(other, PAGE)
        if then_synchronize:
            synchronize(kernel)
            if kernel.bugs:
                raise kernel.bugs[0]

    run.thread("dereg")(lambda: ctx.dereg_mr(mr))
    _finish(run, kernel, driver, [ctx])
    return run


def release_tail(literal: bool) -> ScenarioInstance:
    """The last deregistration alone: put, then ``up_write``, with the deferred free free to run."""
    kernel, driver, mm, _device, ctx = _world(literal_release_tail=literal)
    data = mm.mmap(PAGE)
    mr = ctx.reg_mr(data, PAGE)
    run = ScenarioInstance()
    run.thread("dereg")(lambda: ctx.dereg_mr(mr))
    _finish(run, kernel, driver, [ctx])
    return run


# -- coherence -------------------------------------------------------------------------------


def fault_vs_invalidate(scheme: str, implicit: bool, cpu: str) -> ScenarioInstance:
    """An HCA fault on a page that the CPU invalidates (``MADV_DONTNEED`` or migration) at the same time."""
    kernel, driver, mm, device, ctx = _world(scheme)
    data = mm.mmap(PAGE)
    mm.fault(data, write=True)
    mr = ctx.reg_implicit_mr() if implicit else ctx.reg_mr(data, PAGE)
    run = ScenarioInstance()
    run.thread("hca")(lambda: _device_fault(device, mr, data))
    if cpu == "migrate":
        run.thread("cpu")(lambda: mm.migrate(data))
    else:
        run.thread("cpu")(lambda: mm.madvise_dontneed(data, PAGE))
    _finish(run, kernel, driver, [ctx], before=lambda: _coherent(mm, device))
    return run


def _scenario(name: str, build: Build, description: str, expect: str | None = None) -> Scenario:
    return Scenario(f"rdma-odp-{name}", build, description, expect, version=1)


SCENARIOS: tuple[Scenario, ...] = (
    _scenario("nested-vs-dereg", functools.partial(nested_vs_dereg, "5.4", True),
              "H-1 (5.4): a nested THP-split start queues its down_read behind a umem release waiting "
              "for umem_rwsem, which waits for the outer start", "deadlock"),
    _scenario("legacy-nested-vs-dereg", functools.partial(nested_vs_dereg, "5.3", True),
              "H-1 (5.3): the same deadlock with the per-ucontext per_mm", "deadlock"),
    _scenario("interval-nested-vs-dereg", functools.partial(nested_vs_dereg, "5.5", True),
              "H-1 in 5.5 (\"RDMA/odp: Use mmu_interval_notifier_insert()\"): the same nested THP-split zap "
              "against a deregistration; no umem_rwsem, the remove waits for the sequence: no deadlock"),
    _scenario("interval-fault-vs-invalidate", functools.partial(fault_vs_invalidate, "5.5", False, "dontneed"),
              "5.5: an HCA fault races MADV_DONTNEED; read_begin / read_retry under umem_mutex keep the MTTs "
              "coherent"),
    _scenario("flat-vs-dereg", functools.partial(nested_vs_dereg, "5.4", False),
              "H-1 fixed form (5.4 flow without the nested start; the kernel's fix removed umem_rwsem in 5.5)"),
    _scenario("oom-reaper-missed-unlock", functools.partial(oom_reaper, True),
              "H-2: a refused non-blockable start returns holding umem_rwsem; the OOM reaper leaves it held",
              "held-at-exit"),
    _scenario("oom-reaper", functools.partial(oom_reaper, False),
              "H-2 fixed: every refusal drops umem_rwsem"),
    _scenario("implicit-child-after-exit", functools.partial(implicit_fault_vs_exit, "5.4", True),
              "H-3 (5.4 as shipped): an implicit child faulted after exit registers on a dead mm (BUG_ON)",
              "exception"),
    _scenario("implicit-fault-vs-exit", functools.partial(implicit_fault_vs_exit, "5.4", False),
              "H-3 fixed: mmget_not_zero before creating an implicit child"),
    _scenario("legacy-implicit-fault-vs-exit", functools.partial(implicit_fault_vs_exit, "5.3", True),
              "H-3 under 5.3 with the same code: children borrow the parent's per_mm, nothing registers"),
    _scenario("double-leaf-free", functools.partial(double_leaf_free, "5.4", True),
              "H-4: two invalidations of one implicit child both see it empty and not dying, and queue "
              "its free twice: the parent's teardown waits for a count that never returns to zero "
              "(or reads the parent the first free already cleared)", "deadlock"),
    _scenario("leaf-free", functools.partial(double_leaf_free, "5.4", False),
              "H-4 fixed: umem_mutex held across the unmap and the dying test"),
    _scenario("put-outside-rwsem", functools.partial(put_vs_invalidation, True),
              "H-6, a counterfactual NO KERNEL SHIPPED: the last put after up_write; an invalidation "
              "starts with users 1, ends with users 0 and returns holding umem_rwsem", "held-at-exit"),
    _scenario("put-outside-rwsem-freed-held", functools.partial(put_vs_invalidation, True, True),
              "H-6, a counterfactual NO KERNEL SHIPPED: the same, and the invalidating task then waits for a "
              "grace period: the per_mm is freed while its umem_rwsem is held", "exception"),
    _scenario("put-under-rwsem", functools.partial(put_vs_invalidation, False),
              "H-6 as 5.4 has it: the put under umem_rwsem for write"),
    _scenario("literal-release-tail", functools.partial(release_tail, True),
              "(reading) 5.4's up_write after mmu_notifier_put: the deferred free may run first and free "
              "umem_rwsem while it is held (debug_check_no_locks_freed), then the unlock touches freed memory",
              "exception"),
    _scenario("fault-vs-invalidate", functools.partial(fault_vs_invalidate, "5.4", False, "dontneed"),
              "an HCA fault racing MADV_DONTNEED of its page leaves no stale MTT"),
    _scenario("fault-vs-migrate", functools.partial(fault_vs_invalidate, "5.4", False, "migrate"),
              "an HCA fault racing migration of its page leaves no stale MTT"),
    _scenario("implicit-fault-vs-invalidate", functools.partial(fault_vs_invalidate, "5.4", True, "dontneed"),
              "an implicit-ODP fault (child creation) racing MADV_DONTNEED leaves no stale MTT"),
    _scenario("legacy-fault-vs-invalidate", functools.partial(fault_vs_invalidate, "5.3", False, "dontneed"),
              "5.3: an HCA fault racing MADV_DONTNEED of its page leaves no stale MTT"),
)
