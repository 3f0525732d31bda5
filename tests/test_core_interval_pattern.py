"""The documented driver pattern helper (``mmu_notifier.interval_pattern``), kernel-semantics.md section 5.8."""

from __future__ import annotations

import errno

import pytest

import mmu_notifier as mn
from mmu_notifier import notifier
from mmu_notifier.interval_pattern import IntervalMirror
from mmu_notifier.range import Event, Range

PAGE = 4096


class Mirror(mn.Driver):
    """A device page table over interval subscriptions, written with the helper."""

    name = "pattern-mirror"
    version = "1.0"
    required_hooks = ("invalidate",)

    def __init__(self) -> None:
        super().__init__()
        self.mirror = IntervalMirror("mirror->update")
        self.device: dict[int, int] = {}
        self.torn: list[tuple[int, int]] = []

    def _teardown(self, start: int, end: int) -> None:
        self.torn.append((start, end))
        for vpn in [v for v in self.device if start <= v * PAGE < end]:
            del self.device[vpn]

    @mn.hookimpl
    def invalidate(self, subscription: mn.MMUIntervalNotifier, range: mn.Range, cur_seq: int) -> bool:
        return self.mirror.invalidate(subscription, range, cur_seq, self._teardown)


@pytest.fixture
def mirror(kernel: mn.Kernel) -> Mirror:
    driver = Mirror()
    kernel.drivers.add(driver)
    return driver


def _mapped(mm: mn.MM, mirror: Mirror, pages: int = 4) -> tuple[mn.MMUIntervalNotifier, int]:
    start = mm.mmap(pages * PAGE)
    sub = mn.MMUIntervalNotifier()
    mn.interval_notifier_insert(sub, mm, start, pages * PAGE, mirror)
    return sub, start


def _fault(mm: mn.MM, mirror: Mirror, sub: mn.MMUIntervalNotifier, addr: int, **kw: object) -> int:
    def program(pfn: int) -> int:
        mirror.device[addr // PAGE] = pfn
        return pfn

    return mirror.mirror.fault(sub, lambda: mm.handle_mm_fault(addr, True), program, **kw)  # type: ignore[arg-type]


def test_fault_programs_the_cpu_frame(kernel, mirror, mm):
    sub, start = _mapped(mm, mirror)
    pfn = _fault(mm, mirror, sub, start)
    assert mirror.device == {start // PAGE: pfn} == {start // PAGE: mm.page_table.lookup(start // PAGE).pfn}
    assert mirror.mirror.retries == 0 and mm.mm_users.value == 1  # the fault's mmget was dropped


def test_an_invalidation_between_read_begin_and_read_retry_forces_a_retry(kernel, mirror, mm):
    sub, start = _mapped(mm, mirror)
    collects: list[int] = []

    def collect() -> int:
        collects.append(1)
        if len(collects) == 1:  # the CPU changes the range while the device collects it
            rng = Range(mm, start, start + PAGE, Event.CLEAR)
            notifier.invalidate_range_start(rng)
            notifier.invalidate_range_end(rng)
        return mm.handle_mm_fault(start, True)

    programmed: list[int] = []
    mirror.mirror.fault(sub, collect, programmed.append)
    assert len(collects) == 2 and len(programmed) == 1 and mirror.mirror.retries == 1


def test_busy_collect_restarts_and_max_tries_gives_up(kernel, mirror, mm):
    sub, _ = _mapped(mm, mirror)

    def busy() -> int:
        raise mn.BusyError("hmm_range_fault: -EBUSY")

    with pytest.raises(mn.BusyError, match="collisions"):
        mirror.mirror.fault(sub, busy, lambda x: x, max_tries=3)
    assert mirror.mirror.retries == 3 and mm.mm_users.value == 1 and not mm.mmap_lock.readers


def test_invalidate_sets_seq_and_tears_down_only_the_intersection(kernel, mirror, mm):
    sub, start = _mapped(mm, mirror, 2)
    _fault(mm, mirror, sub, start)
    mm.munmap(start - 0, 8 * PAGE)
    assert mirror.torn == [(start, start + 2 * PAGE)] and mirror.device == {}
    assert sub.invalidate_seq % 2 == 1


def test_read_begin_holding_the_lock_invalidate_takes_is_refused(kernel, mirror, mm):
    sub, _ = _mapped(mm, mirror)
    with mirror.mirror.update, pytest.raises(mn.MisuseError, match="mirror->update"):
        mirror.mirror.read_begin(sub)


def test_read_retry_without_the_lock_is_refused(kernel, mirror, mm):
    sub, _ = _mapped(mm, mirror)
    seq = mirror.mirror.read_begin(sub)
    with pytest.raises(mn.MisuseError, match="without holding mirror->update"):
        mirror.mirror.read_retry(sub, seq)


def test_nonblockable_invalidate_refuses_when_the_lock_is_busy(kernel, mirror, mm):
    _, start = _mapped(mm, mirror)
    rng = Range(mm, start, start + PAGE, Event.UNMAP)
    with mirror.mirror.update:
        assert notifier.invalidate_range_start_nonblock(rng) == -errno.EAGAIN
    assert mm.mmu_notifier_mm is not None and mm.mmu_notifier_mm.interval is not None
    assert mm.mmu_notifier_mm.interval.active_invalidate_ranges == 0
    assert notifier.invalidate_range_start_nonblock(rng) == 0
    notifier.invalidate_range_end(rng)


def test_fault_on_an_exited_mm_is_efault(kernel, mirror, mm):
    sub, start = _mapped(mm, mirror)
    mm.exit()
    with pytest.raises(mn.BadAddressError, match="exited"):
        _fault(mm, mirror, sub, start)
    mn.interval_notifier_remove(sub)
    assert mm.freed
