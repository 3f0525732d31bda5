"""Rules that must hold after every event, for any sequence of CPU and device events (hypothesis).

* ``ms_range_active`` is back to 0 once no invalidation is in flight (start/end balanced);
* every TLB entry an instruction of the mm can hit matches the CPU page table
  (same frame; writable only where the CPU entry is writable);
* every loaded context's ASID is this mm's on its chiplet, and no two mms share a live ASID on a chiplet.
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmu_notifier as mn
from mmu_notifier_gru import GruConfig, GruDriver, GruDriverBase, GruThreadState
from mmu_notifier_gru.device import live_asid

PAGE = 4096
PAGES = 6
BASE = 1 << 32

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(
            ["dev_read", "dev_write", "cpu_write", "munmap", "remap", "madvise", "reclaim", "migrate",
             "mprotect_ro", "mprotect_rw", "fork", "unload", "other_mm"]
        ),
        st.integers(0, PAGES - 1),
        st.integers(0, 1),
    ),
    max_size=40,
)


def check(driver: GruDriverBase, mms: list[mn.MM]) -> None:
    for mm in mms:
        states = driver.thread_states(mm)
        if not states:
            continue
        gms = states[0].ts_gms
        assert gms is not None and gms.ms_range_active.value == 0
        for gru in driver.gru_base:
            asids = {live_asid(gms, gru)} | {gts.ts_asid for gts in states if gts.ts_gru is gru}
            for asid in asids - {0}:
                for (tag, vpn), entry in gru.tlb.entries.items():
                    if tag != asid:
                        continue
                    pte = mm.page_table.lookup(vpn)
                    assert pte is not None and pte.pfn == entry.pfn, f"stale entry for page {vpn:#x}"
                    assert pte.writable or not entry.writable, f"writable device entry on read-only page {vpn:#x}"
    for gru in driver.gru_base:
        owners: dict[int, int] = {}
        for mm in mms:
            states = driver.thread_states(mm)
            if states and states[0].ts_gms is not None:
                asid = live_asid(states[0].ts_gms, gru)
                if asid:
                    assert owners.setdefault(asid, mm.id) == mm.id, f"ASID {asid:#x} live for two mms"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS, st.sampled_from(["call_os", "interrupt"]), st.integers(1, 3))
def test_counter_balanced_and_device_coherent_after_every_event(
    events: list[tuple[str, int, int]], mode: str, tlb: int
) -> None:
    kernel = mn.Kernel(frames=512)
    config = GruConfig(chiplets=2, contexts_per_chiplet=2, tlb_entries=tlb, asid_min=8, asid_max=8 + 4 * 8,
                       dropin_mode=mode)
    driver = GruDriver(config)
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    mm.mmap(PAGES * PAGE, addr=BASE)
    states: list[GruThreadState] = [
        driver.gru_set_context_option(mm, driver.gru_file_mmap(mm).start, chiplet) for chiplet in (0, 1)
    ]
    mms = [mm]
    for event, page, which in events:
        addr = BASE + page * PAGE
        gts = states[which]
        if event in ("dev_read", "dev_write"):
            with contextlib.suppress(mn.BadAddressError):
                driver.gru_instruction(gts, addr, write=event == "dev_write")
        elif event == "cpu_write":
            with contextlib.suppress(mn.BadAddressError):
                mm.fault(addr, write=True)
        elif event == "munmap":
            mm.munmap(addr, PAGE)
        elif event == "remap":
            if mm.find_vma(addr) is None:
                mm.mmap(PAGE, addr=addr)
        elif event == "madvise" and mm.find_vma(addr) is not None:
            mm.madvise_dontneed(addr, PAGE)
        elif event == "reclaim":
            mm.reclaim(addr)
        elif event == "migrate":
            mm.migrate(addr)
        elif event.startswith("mprotect") and mm.find_vma(addr) is not None:
            mm.mprotect(addr, PAGE, mn.Prot.READ if event == "mprotect_ro" else mn.RW)
        elif event == "fork":
            mm.fork().exit()
        elif event == "unload":
            driver.gru_user_unload_context(gts)
        elif event == "other_mm":  # another process's contexts push the ASID allocator towards a wrap
            other = mn.MM(kernel)
            other.mmap(PAGE, addr=BASE)
            other_gts = driver.gru_set_context_option(other, driver.gru_file_mmap(other).start, which)
            driver.gru_instruction(other_gts, BASE, write=True)
            mms.append(other)
        check(driver, mms)
    driver.gru_exit(kernel)
    assert driver.stats["gms_alloc"] == driver.stats["gms_free"]
    assert not kernel.warnings and not kernel.bugs
