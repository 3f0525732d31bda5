"""rdma_odp ``scheme = "5.5"`` ("RDMA/odp: Use mmu_interval_notifier_insert()"): one interval notifier per umem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmu_notifier import MM, InvalidArgumentError, Kernel, Range, TryAgainError, interval_read_begin, notifier
from mmu_notifier.kmem import is_freed
from mmu_notifier.range import Event
from mmu_notifier_rdma_odp import RdmaOdpConfig, RdmaOdpDriver
from mmu_notifier_rdma_odp.device import IbUcontext, Mlx5Device
from mmu_notifier_rdma_odp.interval import IntervalScheme, UmemNotifier

PAGE = 4096
ROOT = Path(__file__).resolve().parents[3]


def _world() -> tuple[Kernel, RdmaOdpDriver, MM, Mlx5Device, IbUcontext]:
    kernel = Kernel(frames=128)
    driver = RdmaOdpDriver(RdmaOdpConfig(scheme="5.5"))
    kernel.drivers.add(driver)
    mm = MM(kernel)
    device = Mlx5Device(driver, "mlx5_0")
    return kernel, driver, mm, device, driver.open(device, mm)


def _tree(mm: MM) -> list[object]:
    container = mm.mmu_notifier_mm
    return list(container.interval.itree) if container is not None and container.interval is not None else []


def test_the_ops_hold_only_the_interval_callback() -> None:
    kernel, driver, _, _, _ = _world()
    ops = kernel.drivers.ops_of(driver)
    assert isinstance(driver.scheme, IntervalScheme) and ops.invalidate is not None
    assert all(getattr(ops, name) is None for name in ("alloc_notifier", "free_notifier", "release",
                                                        "invalidate_range_start", "invalidate_range_end"))


def test_each_umem_is_one_interval_notifier_and_no_per_mm() -> None:
    kernel, driver, mm, device, ctx = _world()
    data = mm.mmap(4 * PAGE)
    first = ctx.reg_mr(data, 2 * PAGE)
    second = ctx.reg_mr(data + PAGE, 3 * PAGE)
    assert first.umem.per_mm is None and isinstance(first.umem.notifier, UmemNotifier)
    assert _tree(mm) == [first.umem.notifier, second.umem.notifier]
    assert (second.umem.notifier.start, second.umem.notifier.last) == (data + PAGE, data + 4 * PAGE - 1)
    assert mm.mmu_notifier_mm is not None and not mm.mmu_notifier_mm.subscriptions
    assert device.page_fault(first, data, True) == mm.page_table.lookup(data >> 12).pfn
    sub = first.umem.notifier
    ctx.dereg_mr(first)
    assert _tree(mm) == [second.umem.notifier] and is_freed(sub)
    ctx.close()
    driver.ib_uverbs_cleanup(kernel)
    assert driver.stats["umem_alloc"] == driver.stats["umem_free"] == 2 and driver.stats["per_mm_alloc"] == 0


def test_invalidate_zaps_under_umem_mutex_and_refuses_non_blockable() -> None:
    kernel, driver, mm, device, ctx = _world()
    data = mm.mmap(2 * PAGE)
    mr = ctx.reg_mr(data, 2 * PAGE)
    for page in (data, data + PAGE):
        device.page_fault(mr, page, True)
    assert len(device.translations(mm)) == 2
    assert notifier.invalidate_range_start_nonblock(Range(mm, data, data + PAGE, Event.UNMAP)) < 0
    assert len(device.translations(mm)) == 2
    seq = interval_read_begin(mr.umem.notifier)
    mm.madvise_dontneed(data, PAGE)
    assert sorted(device.translations(mm)) == [(data + PAGE) >> 12] and mr.umem.npages == 1
    assert mr.umem.notifier.invalidate_seq != seq  # set_seq ran: a fault that sampled seq must retry
    ctx.close()
    driver.ib_uverbs_cleanup(kernel)


def test_a_fault_that_collides_is_eagain_without_a_completion() -> None:
    kernel, driver, mm, device, ctx = _world()
    data = mm.mmap(PAGE)
    mr = ctx.reg_mr(data, PAGE)

    def collide(*args: object) -> int:  # an invalidation between the gup and the MTT write
        mm.madvise_dontneed(data, PAGE)
        return 1

    from mmu_notifier_rdma_odp import device as device_module

    original = device_module.map_dma_pages
    device_module.map_dma_pages = collide  # type: ignore[assignment]
    try:
        with pytest.raises(TryAgainError):
            device.page_fault(mr, data, True)
    finally:
        device_module.map_dma_pages = original
    assert not device.translations(mm)
    assert device.page_fault(mr, data, True) == mm.page_table.lookup(data >> 12).pfn
    ctx.close()
    driver.ib_uverbs_cleanup(kernel)


def test_exit_unmaps_every_umem_through_the_cores_release_range() -> None:
    kernel, driver, mm, device, ctx = _world()
    data = mm.mmap(2 * PAGE)
    mr = ctx.reg_mr(data, 2 * PAGE)
    device.page_fault(mr, data, True)
    driver.process_exit(mm)
    assert not device.translations(mm) and mr.umem.npages == 0
    with pytest.raises(InvalidArgumentError):  # the owner exited: EINVAL
        device.page_fault(mr, data, True)
    ctx.close()
    driver.ib_uverbs_cleanup(kernel)


def test_implicit_odp_is_refused_in_5_5() -> None:
    _, _, _, _, ctx = _world()
    with pytest.raises(InvalidArgumentError, match=r"implicit ODP is not modelled in the 5\.5 scheme"):
        ctx.reg_implicit_mr()


def test_the_kit_passes_for_5_5() -> None:
    run = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "mmu_notifier.conformance", "--mmu-driver",
                          "rdma_odp", "-q", "-rsxX", "-p", "no:cacheprovider"], capture_output=True, text=True,
                         timeout=900, check=False, env={**os.environ, "MMU_NOTIFIER_RDMA_ODP__SCHEME": "5.5"})
    out = run.stdout
    assert run.returncode == 0, out[-5000:] + run.stderr[-2000:]
    assert "failed" not in out and "xfail" not in out
    assert "declares the capability 'interval_only'" in out


def test_run_drives_5_5_with_no_violation() -> None:
    workload = ROOT / "examples" / "workloads" / "interval-5.5.toml"
    run = subprocess.run([str(Path(sys.executable).with_name("mmu-notifier")), "run", str(workload), "--json"],
                         capture_output=True, text=True, timeout=600, check=False)
    doc = json.loads(run.stdout)
    odp = doc["drivers"]["rdma_odp"]
    assert run.returncode == 0 and doc["ok"] and not doc["violations"] and not odp["violations"]
    assert odp["invalidations"] and odp["allocated"] == 0 and odp["device_faults"]
