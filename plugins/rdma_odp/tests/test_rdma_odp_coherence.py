"""A hypothesis mix of CPU operations and HCA faults never leaves a stale or over-permissive MTT."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

import mmu_notifier as mn

from .conftest import PAGE, build

PAGES = 4
OPS = st.lists(
    st.tuples(
        st.sampled_from(["fault", "fault", "implicit", "dontneed", "migrate", "reclaim", "protect", "cpu_write",
                         "fork", "soft_dirty"]),
        st.integers(0, PAGES - 1),
        st.booleans(),
    ),
    max_size=30,
)


def _check(w: object, mm: mn.MM, devices: list) -> None:  # type: ignore[type-arg]
    for device in devices:
        for mr in device.mrs:
            for reachable in mr.ksm.values() if mr.implicit else (mr,):
                base = reachable.umem.start // PAGE
                for index, (pfn, writable) in reachable.mtt.items():
                    pte = mm.page_table.lookup(base + index)
                    assert pte is not None and pte.pfn == pfn, f"stale MTT at page {base + index:#x}"
                    assert not writable or pte.writable, f"writable MTT over a read-only PTE at {base + index:#x}"


@settings(max_examples=60, deadline=None)
@given(ops=OPS, scheme=st.sampled_from(["5.4", "5.3"]))
def test_cpu_operations_and_device_faults_stay_coherent(ops: list[tuple[str, int, bool]], scheme: str) -> None:
    w = build(scheme=scheme, implicit_chunk_size=1 << 20)
    mm = w.mm
    data = mm.mmap(PAGES * PAGE)
    first, second = w.open(0), w.open(1)
    mr = first.reg_mr(data, PAGES * PAGE)
    imr = second.reg_implicit_mr()
    children: list[mn.MM] = []
    for op, page, flag in ops:
        address = data + page * PAGE
        if op == "fault":
            with contextlib.suppress(mn.KernelError):
                w.devices[0].page_fault(mr, address, flag)
        elif op == "implicit":
            with contextlib.suppress(mn.KernelError):
                w.devices[1].page_fault(imr, address, flag)
        elif op == "dontneed":
            mm.madvise_dontneed(address, PAGE, split_huge_page=flag)
        elif op == "migrate":
            mm.migrate(address)
        elif op == "reclaim":
            mm.reclaim(address)
        elif op == "protect":
            mm.mprotect(data, PAGES * PAGE, mn.Prot.READ if flag else mn.RW)
        elif op == "cpu_write":
            with contextlib.suppress(mn.KernelError):
                mm.fault(address, write=True)
        elif op == "fork":
            children.append(mm.fork())
        else:
            mm.clear_soft_dirty()
        w.kernel.system_wq.flush()
        _check(w, mm, w.devices)
    first.close()
    second.close()
    for child in children:
        child.exit()
    mm.exit()
    w.driver.ib_uverbs_cleanup(w.kernel)
    assert w.kernel.warnings == [] and w.kernel.bugs == []
    assert w.driver.stats["per_mm_alloc"] == w.driver.stats["per_mm_free"]
    assert w.driver.stats["umem_alloc"] == w.driver.stats["umem_free"]
    assert mm.freed
