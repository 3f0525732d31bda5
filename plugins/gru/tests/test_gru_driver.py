"""The v5.4 driver's behaviour: GMS lifetime, dropins against invalidations, flushing, ASIDs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import mmu_notifier as mn
from mmu_notifier import notifier
from mmu_notifier_gru import GruDriverBase, GruMMStruct, GruThreadState
from mmu_notifier_gru.device import GRUMAXINVAL, GruTLB

PAGE = 4096
Loaded = tuple[mn.Kernel, GruDriverBase]


def setup(make: Callable[..., Loaded], pages: int = 4, **config: Any) -> tuple[mn.Kernel, GruDriverBase, mn.MM, int]:
    """A loaded driver, a live mm and ``pages`` CPU-populated writable pages at the returned address."""
    kernel, driver = make(**config)
    mm = mn.MM(kernel)
    addr = mm.mmap(pages * PAGE)
    for page in range(pages):
        mm.fault(addr + page * PAGE, write=True)
    return kernel, driver, mm, addr


def thread_state(driver: GruDriverBase, mm: mn.MM, chiplet: int = -1) -> GruThreadState:
    """A new GSEG with one thread state (the user path that takes the GMS reference)."""
    return driver.gru_set_context_option(mm, driver.gru_file_mmap(mm).start, chiplet)


def gms_of(gts: GruThreadState) -> GruMMStruct:
    assert gts.ts_gms is not None
    return gts.ts_gms


def test_one_gms_per_mm_shared_by_every_thread_state(make: Callable[..., Loaded]) -> None:
    kernel, driver = make()
    mm, other = mn.MM(kernel), mn.MM(kernel)
    a, b, c = thread_state(driver, mm), thread_state(driver, mm), thread_state(driver, other)
    assert gms_of(a) is gms_of(b) is not gms_of(c)
    assert gms_of(a).users == 2 and gms_of(c).users == 1
    assert driver.stats["gms_alloc"] == 2


def test_the_reference_is_taken_with_get_locked_under_the_mmap_lock_held_for_write(
    make: Callable[..., Loaded], monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel, driver = make()
    mm = mn.MM(kernel)
    seen: list[bool] = []
    real = mn.get_locked

    def spy(drv: object, on: mn.MM) -> mn.MMUNotifier:
        seen.append(on.mmap_lock.is_write_locked_by_current())
        return real(drv, on)

    monkeypatch.setattr(mn, "get_locked", spy)
    thread_state(driver, mm)
    thread_state(driver, mm)
    assert seen == [True, True]
    assert not mm.mmap_lock.is_locked_by_current()


def test_the_last_drop_puts_and_the_gms_is_freed_after_a_grace_period(make: Callable[..., Loaded]) -> None:
    kernel, driver = make()
    mm = mn.MM(kernel)
    first, second = thread_state(driver, mm), thread_state(driver, mm)
    gms = gms_of(first)
    assert first.ts_vma is not None and second.ts_vma is not None
    driver.gru_vma_close(first.ts_vma)
    assert gms.users == 1 and gms.linked
    driver.gru_vma_close(second.ts_vma)
    assert mm.mmu_notifier_mm is not None and not mm.mmu_notifier_mm.subscriptions
    driver.gru_exit(kernel)
    assert driver.stats["gms_free"] == 1
    with pytest.raises(mn.UseAfterFreeError):
        gms.ms_range_active  # noqa: B018 - touching the freed GMS is the point
    assert mm.mm_count.value == 1 and not kernel.warnings and not kernel.bugs


def test_no_release_callback_teardown_is_put_driven(make: Callable[..., Loaded]) -> None:
    kernel, driver, mm, addr = setup(make)
    gts = thread_state(driver, mm)
    assert driver.gru_instruction(gts, addr) == mm.page_table.entries[addr // PAGE].pfn
    assert kernel.drivers.ops_of(driver).release is None
    mm.exit()
    assert driver.stats["gms_free"] == 0 and gms_of(gts).users == 1
    assert gts.ts_vma is not None
    driver.gru_vma_close(gts.ts_vma)
    driver.gru_exit(kernel)
    assert driver.stats["gms_free"] == 1 and mm.freed and not kernel.warnings


def test_a_failed_get_drops_the_new_thread_state_and_leaks_nothing(make: Callable[..., Loaded]) -> None:
    kernel, driver = make(kernel=mn.Kernel(frames=64, users_limit=1))
    mm = mn.MM(kernel)
    thread_state(driver, mm)
    with pytest.raises(mn.RefcountOverflowError):
        thread_state(driver, mm)
    assert driver.stats["gts_alloc"] == 2 and driver.stats["gts_free"] == 1
    assert not mm.mmap_lock.is_locked_by_current()


def test_call_os_dropin_waits_while_an_invalidation_is_in_flight_and_completes_after_it(
    make: Callable[..., Loaded],
) -> None:
    _kernel, driver, mm, addr = setup(make)
    gts = thread_state(driver, mm)
    driver.gru_fault(gts)
    rng = mn.Range(mm, addr + PAGE, addr + 2 * PAGE, mn.Event.CLEAR)
    notifier.invalidate_range_start(rng)
    result: list[int | None] = []
    device = threading.Thread(target=lambda: result.append(driver.gru_instruction(gts, addr)))
    device.start()
    device.join(0.3)
    assert device.is_alive() and not result, "the dropin must wait for the range to end"
    assert driver.stats["tlb_dropin"] == 0 and not driver.device_translations(mm)
    notifier.invalidate_range_end(rng)
    device.join(5)
    assert result == [mm.page_table.entries[addr // PAGE].pfn]
    assert driver.stats["tlb_dropin"] == 1 and gms_of(gts).ms_range_active.value == 0


def test_interrupt_dropin_reports_retry_while_an_invalidation_is_in_flight(make: Callable[..., Loaded]) -> None:
    _kernel, driver, mm, addr = setup(make, dropin_mode="interrupt")
    gts = thread_state(driver, mm)
    rng = mn.Range(mm, addr, addr + PAGE, mn.Event.CLEAR)
    notifier.invalidate_range_start(rng)
    assert driver.gru_instruction(gts, addr) is None
    assert driver.stats["tlb_dropin_fail_range_active"] == 1 and not driver.device_translations(mm)
    notifier.invalidate_range_end(rng)
    assert driver.gru_instruction(gts, addr) == mm.page_table.entries[addr // PAGE].pfn


def test_a_failed_interrupt_dropin_leaves_the_retry_to_the_call_os_path(make: Callable[..., Loaded]) -> None:
    kernel, driver = make(dropin_mode="interrupt")
    mm = mn.MM(kernel)
    addr = mm.mmap(PAGE)
    gts = thread_state(driver, mm)
    assert driver.gru_instruction(gts, addr, write=True) is None, "interrupt context cannot fault the page in"
    assert driver.stats["tlb_dropin_fail_upm"] == 1 and gts.ts_tfh_user_polling and not mm.page_table.entries
    pfn = driver.gru_instruction(gts, addr, write=True)
    assert pfn == mm.page_table.entries[addr // PAGE].pfn and not gts.ts_tfh_user_polling
    assert driver.stats["tlb_dropin"] == 1


def test_only_the_invalidated_range_is_flushed(make: Callable[..., Loaded]) -> None:
    _kernel, driver, mm, addr = setup(make, pages=4)
    gts = thread_state(driver, mm)
    for page in range(4):
        driver.gru_instruction(gts, addr + page * PAGE)
    before = driver.device_translations(mm)
    assert len(before) == 4
    mm.madvise_dontneed(addr + PAGE, 2 * PAGE)
    after = driver.device_translations(mm)
    first = addr // PAGE
    assert after == {first: before[first], first + 3: before[first + 3]}


def test_contexts_of_one_mm_on_several_chiplets_are_all_flushed(make: Callable[..., Loaded]) -> None:
    _kernel, driver, mm, addr = setup(make, pages=2, chiplets=3)
    on_0, on_2 = thread_state(driver, mm, chiplet=0), thread_state(driver, mm, chiplet=2)
    for gts in (on_0, on_2):
        driver.gru_instruction(gts, addr)
        driver.gru_instruction(gts, addr + PAGE)
    vpn = addr // PAGE
    gms = gms_of(on_0)
    assert gms.ms_asidmap == 0b101
    for gid in (0, 2):
        assert set(driver.gru_base[gid].tlb.of_asid(gms.ms_asids[gid].mt_asid)) == {vpn, vpn + 1}
    mm.reclaim(addr)
    for gid in (0, 2):
        assert set(driver.gru_base[gid].tlb.of_asid(gms.ms_asids[gid].mt_asid)) == {vpn + 1}
    assert gms.ms_range_active.value == 0


def test_a_chiplet_without_loaded_contexts_drops_the_asid_and_reload_takes_a_fresh_one(
    make: Callable[..., Loaded],
) -> None:
    _kernel, driver, mm, addr = setup(make, pages=2, chiplets=1)
    gts = thread_state(driver, mm)
    driver.gru_instruction(gts, addr)
    gms, chiplet = gms_of(gts), driver.gru_base[0]
    old = gms.ms_asids[0].mt_asid
    driver.gru_user_unload_context(gts)
    assert gms.ms_asids[0].mt_asid == old and gms.ms_asids[0].mt_ctxbitmap == 0
    mm.reclaim(addr + PAGE)  # touches a page the device never used: still drops the ASID
    assert gms.ms_asids[0].mt_asid == 0 and gms.ms_asidmap == 0
    driver.gru_fault(gts)
    assert gts.ts_asid not in (0, old)
    assert chiplet.tlb.of_asid(old) and not driver.device_translations(mm), "old entries are unreachable"


def test_a_reload_before_any_invalidation_reuses_the_asid_and_its_entries(make: Callable[..., Loaded]) -> None:
    _kernel, driver, mm, addr = setup(make, chiplets=1)
    gts = thread_state(driver, mm)
    pfn = driver.gru_instruction(gts, addr)
    asid = gts.ts_asid
    driver.gru_user_unload_context(gts)
    driver.gru_fault(gts)
    dropins = driver.stats["tlb_dropin"]
    assert gts.ts_asid == asid and driver.gru_instruction(gts, addr) == pfn
    assert driver.stats["tlb_dropin"] == dropins, "the reused ASID hits its old entry"


def test_asid_reuse_after_a_wrap_never_shows_another_mms_entries(make: Callable[..., Loaded]) -> None:
    kernel, driver = make(chiplets=1, contexts_per_chiplet=1, asid_min=8, asid_max=8 + 3 * 8)
    chiplet = driver.gru_base[0]
    victim = mn.MM(kernel)
    addr = victim.mmap(PAGE, addr=1 << 32)
    victim.fault(addr, write=True)
    gts = thread_state(driver, victim)
    victim_pfn = driver.gru_instruction(gts, addr)
    first_asid = gts.ts_asid
    driver.gru_user_unload_context(gts)
    others = []
    while chiplet.gs_asid_gen == 0:
        other = mn.MM(kernel)
        other.mmap(PAGE, addr=1 << 32)
        other_gts = thread_state(driver, other)
        driver.gru_fault(other_gts)
        driver.gru_user_unload_context(other_gts)
        others.append((other, other_gts))
    other, other_gts = others[-1]
    assert chiplet.gs_asid_gen == 1 and not chiplet.tlb.entries, "a wrap flushes the whole TLB"
    driver.gru_fault(other_gts)
    assert other_gts.ts_asid == first_asid, "the wrapped allocator hands the victim's old ASID out again"
    pfn = driver.gru_instruction(other_gts, addr, write=True)
    assert pfn != victim_pfn and pfn == other.page_table.entries[addr // PAGE].pfn
    driver.gru_fault(gts)
    assert gts.ts_asid != first_asid, "a tracker of the old generation gets a new ASID"


def test_a_wrap_skips_asids_of_contexts_still_loaded(make: Callable[..., Loaded]) -> None:
    kernel, driver = make(chiplets=1, contexts_per_chiplet=2, asid_min=8, asid_max=8 + 3 * 8)
    chiplet = driver.gru_base[0]
    pinned = thread_state(driver, mn.MM(kernel))
    driver.gru_fault(pinned)
    handed = []
    while chiplet.gs_asid_gen < 2:
        gts = thread_state(driver, mn.MM(kernel))
        driver.gru_fault(gts)
        handed.append(gts.ts_asid)
        driver.gru_user_unload_context(gts)
    assert pinned.ts_asid not in handed


def test_the_tlb_evicts_its_oldest_entry_when_full(make: Callable[..., Loaded]) -> None:
    _kernel, driver, mm, addr = setup(make, pages=3, chiplets=1, tlb_entries=2)
    gts = thread_state(driver, mm)
    for page in range(3):
        driver.gru_instruction(gts, addr + page * PAGE)
    assert sorted(driver.device_translations(mm)) == [addr // PAGE + 1, addr // PAGE + 2]


def test_the_hardware_ignores_a_dropin_after_an_invalidate_it_did_not_see() -> None:
    tlb = GruTLB(4)
    seen = tlb.invalidations
    tlb.invalidate(8, 0, 1)
    assert not tlb.dropin(8, 5, 1, False, seen) and not tlb.entries
    assert tlb.dropin(8, 5, 1, False, tlb.invalidations) and tlb.lookup(8, 5, False) == 1
    assert tlb.lookup(8, 5, True) is None, "a read-only entry misses on a write"


def test_one_flush_covers_at_most_grumaxinval_pages_as_the_driver_issues_one_tgh_invalidate(
    make: Callable[..., Loaded],
) -> None:
    kernel, driver = make(chiplets=1)
    mm = mn.MM(kernel)
    pages = GRUMAXINVAL + 8
    addr = mm.mmap(pages * PAGE)
    gts = thread_state(driver, mm)
    inside, beyond = addr, addr + (GRUMAXINVAL + 4) * PAGE
    for vaddr in (inside, beyond):
        mm.fault(vaddr, write=True)
        driver.gru_instruction(gts, vaddr)
    rng = mn.Range(mm, addr, addr + pages * PAGE, mn.Event.CLEAR)
    notifier.invalidate_range_start(rng)
    notifier.invalidate_range_end(rng)
    assert set(driver.device_translations(mm)) == {beyond // PAGE}


def test_start_never_sleeps_or_refuses_a_non_blockable_range(make: Callable[..., Loaded]) -> None:
    kernel, driver, mm, addr = setup(make)
    gts = thread_state(driver, mm)
    driver.gru_instruction(gts, addr)
    assert mm.oom_reap() is True
    assert not driver.device_translations(mm) and gms_of(gts).ms_range_active.value == 0
    assert not kernel.warnings


def test_a_write_to_a_read_only_mapping_is_a_device_exception(make: Callable[..., Loaded]) -> None:
    kernel, driver = make()
    mm = mn.MM(kernel)
    addr = mm.mmap(PAGE, prot=mn.Prot.READ)
    gts = thread_state(driver, mm)
    with pytest.raises(mn.BadAddressError):
        driver.gru_instruction(gts, addr, write=True)
    with pytest.raises(mn.BadAddressError):
        driver.gru_instruction(gts, gts.ts_vma.start if gts.ts_vma else 0)  # the GSEG itself


def test_module_unload_closes_everything_and_waits_for_every_free(make: Callable[..., Loaded]) -> None:
    kernel, driver = make()
    for _ in range(3):
        thread_state(driver, mn.MM(kernel))
    driver.gru_exit(kernel)
    assert driver.stats["gms_free"] == 3 and kernel.srcu.pending_callbacks() == 0 and not driver.vdata


def test_concurrent_dropins_and_invalidations_on_real_threads_stay_coherent(make: Callable[..., Loaded]) -> None:
    kernel, driver, mm, addr = setup(make, pages=8)
    states = [thread_state(driver, mm, chiplet=c) for c in (0, 1)]
    stop = time.monotonic() + 0.5

    def device(gts: GruThreadState) -> None:
        page = 0
        while time.monotonic() < stop:
            driver.gru_instruction(gts, addr + (page % 8) * PAGE)
            page += 1

    workers = [threading.Thread(target=device, args=(gts,)) for gts in states]
    for worker in workers:
        worker.start()
    page = 0
    while time.monotonic() < stop:
        mm.migrate(addr + (page % 8) * PAGE)
        page += 3
    for worker in workers:
        worker.join(5)
    for vpn, pfn in driver.device_translations(mm).items():
        assert mm.page_table.entries[vpn].pfn == pfn
    assert gms_of(states[0]).ms_range_active.value == 0 and not kernel.warnings and not kernel.bugs


def test_detach_after_exit_unmaps_under_its_own_mm_users_reference(make: Callable[..., Loaded]) -> None:
    """The exerciser's detach munmaps the GSEG holding ``mm_users`` itself (``mmget_not_zero``), so another
    holder's last ``mmput`` cannot run ``exit_mmap`` (and unlink every subscription) between the munmap's start
    and end; a dying mm is left alone. Found by the default workload at seed 1: rdma_odp's read lock, taken at
    the start, never saw its end."""
    kernel, driver = make()
    exerciser = driver.exerciser(kernel)
    mm = mn.MM(kernel)
    handle = exerciser.attach(mm)
    mm.mmget()  # another holder (a kernel thread's mmget_not_zero) outlives the process
    mm.exit()
    seen: list[int] = []
    munmap = mm.munmap
    mm.munmap = lambda start, length: (seen.append(mm.mm_users.value), munmap(start, length))  # type: ignore[method-assign]
    exerciser.detach(handle)
    assert seen == [2]  # the other holder's reference and the munmap's own
    assert mm.mm_users.value == 1 and mm.alive
    mm.mmput()
    assert not mm.alive

    dying = mn.MM(kernel)
    other = exerciser.attach(dying)
    dying.exit()
    calls: list[int] = []
    dying.munmap = lambda start, length: calls.append(start)  # type: ignore[method-assign]
    exerciser.detach(other)  # the GSEG's close still runs
    assert calls == [] and dying.mm_users.value == 0
