"""Interval notifiers (Linux 5.5): kernel-semantics.md section 5, rdma-radeon-interval.md section J."""

from __future__ import annotations

import errno
import threading
import time

import pytest
from interval_driver import IntervalRecorder
from recording import RecordingDriver

import mmu_notifier as mn
from mmu_notifier import interval, kmem, notifier
from mmu_notifier.itree import ULONG_MAX
from mmu_notifier.range import Event, Range

PAGE = 4096


@pytest.fixture
def idriver(kernel: mn.Kernel) -> IntervalRecorder:
    recorder = IntervalRecorder()
    kernel.drivers.add(recorder)
    return recorder


def _state(mm: mn.MM) -> interval.IntervalState:
    assert mm.mmu_notifier_mm is not None and mm.mmu_notifier_mm.interval is not None
    return mm.mmu_notifier_mm.interval


def _insert(mm: mn.MM, driver: object, start: int, pages: int = 1) -> mn.MMUIntervalNotifier:
    sub = mn.MMUIntervalNotifier()
    mn.interval_notifier_insert(sub, mm, start, pages * PAGE, driver)
    return sub


def _range(mm: mn.MM, start: int, end: int, event: Event = Event.CLEAR) -> Range:
    return Range(mm, start, end, event)


def _in_thread(fn, name: str = "helper") -> threading.Thread:
    thread = threading.Thread(target=fn, name=name, daemon=True)
    thread.start()
    return thread


# -- insert ----------------------------------------------------------------------


def test_idle_insert_enables_itree_pins_mm_and_stamps_seq_minus_one(kernel, idriver, mm):
    assert mm.mmu_notifier_mm is None
    sub = _insert(mm, idriver, 0x10000, 2)
    container = mm.mmu_notifier_mm
    assert container is not None and container.has_itree
    state = _state(mm)
    assert state.invalidate_seq == 2 and state.active_invalidate_ranges == 0
    assert sub.invalidate_seq == 1 and sub.in_tree and sub in state.itree
    assert (sub.start, sub.last) == (0x10000, 0x10000 + 2 * PAGE - 1)
    assert sub.mm is mm and mm.mm_count.value == 2  # mmgrab per subscription
    assert mm.mm_users.value == 1  # the core never takes mm_users


@pytest.mark.parametrize(("start", "length"), [(0x1000, 0), (ULONG_MAX, 2), (ULONG_MAX - PAGE + 2, PAGE)])
def test_empty_or_wrapping_range_is_eoverflow_and_changes_nothing(kernel, idriver, mm, start, length):
    sub = mn.MMUIntervalNotifier()
    with pytest.raises(mn.RangeOverflowError) as caught:
        mn.interval_notifier_insert(sub, mm, start, length, idriver)
    assert caught.value.kernel_return == -errno.EOVERFLOW
    assert "interval-recorder" in str(caught.value)
    assert mm.mm_count.value == 1 and not sub.inserted and sub.mm is None
    assert mm.mmu_notifier_mm is None


def test_range_ending_exactly_at_ulong_max_is_accepted(kernel, idriver, mm):
    sub = _insert(mm, idriver, ULONG_MAX - PAGE + 1)
    assert sub.last == ULONG_MAX


def test_insert_misuse_is_refused_before_anything_changes(kernel, idriver, mm):
    sub = _insert(mm, idriver, 0)
    with pytest.raises(mn.MisuseError, match="already inserted"):
        mn.interval_notifier_insert(sub, mm, 0, PAGE, idriver)
    plain = RecordingDriver()
    kernel.drivers.add(plain)
    other = mn.MMUIntervalNotifier()
    with pytest.raises(mn.MisuseError, match="no invalidate hook"):
        mn.interval_notifier_insert(other, mm, 0, PAGE, plain)
    with pytest.raises(mn.InvalidArgumentError, match="bad range"):
        mn.interval_notifier_insert(other, mm, -PAGE, PAGE, idriver)
    with pytest.raises(mn.MisuseError, match="not inserted"):
        mn.interval_notifier_remove(other)
    assert mm.mm_count.value == 2 and len(_state(mm).itree) == 1


def test_insert_locked_needs_the_mmap_lock_for_write(kernel, idriver, mm):
    sub = mn.MMUIntervalNotifier()
    with pytest.raises(mn.MisuseError, match="mmap lock"):
        mn.interval_notifier_insert_locked(sub, mm, 0, PAGE, idriver)
    mm.mmap_lock.down_write()
    try:
        mn.interval_notifier_insert_locked(sub, mm, 0, PAGE, idriver)
    finally:
        mm.mmap_lock.up_write()
    assert sub.in_tree and mm.mmu_notifier_mm is not None and mm.mmu_notifier_mm.has_itree


def test_insert_during_a_range_that_hit_nothing_makes_the_mm_odd(kernel, idriver, mm):
    _insert(mm, idriver, 0x100000)
    rng = _range(mm, 0, PAGE)
    notifier.invalidate_range_start(rng)
    state = _state(mm)
    assert state.invalidate_seq == 2 and state.active_invalidate_ranges == 1  # partially excluded
    sub = _insert(mm, idriver, 0)
    assert state.invalidate_seq == 3 and sub.invalidate_seq == 3 and sub.in_tree
    assert idriver.hits(sub) == []  # the running range already walked the tree: it never calls it
    notifier.invalidate_range_end(rng)
    assert state.invalidate_seq == 4 and state.active_invalidate_ranges == 0


def test_insert_during_a_hit_is_deferred_to_the_last_end(kernel, idriver, mm):
    _insert(mm, idriver, 0)
    outer, inner = _range(mm, 0, PAGE), _range(mm, 0x200000, 0x201000)
    notifier.invalidate_range_start(outer)
    notifier.invalidate_range_start(inner)
    state = _state(mm)
    assert state.invalidate_seq == 3 and state.active_invalidate_ranges == 2
    late = _insert(mm, idriver, 0)
    assert late.deferred and not late.in_tree and late.invalidate_seq == 3
    assert state.deferred == [late]
    notifier.invalidate_range_end(inner)  # not the last: nothing applied
    assert state.invalidate_seq == 3 and not late.in_tree
    notifier.invalidate_range_end(outer)
    assert state.invalidate_seq == 4 and late.in_tree and not late.deferred and state.deferred == []
    assert idriver.hits(late) == []


def test_deferred_list_is_applied_head_first(kernel, idriver, mm):
    first = _insert(mm, idriver, 0)
    rng = _range(mm, 0, PAGE)
    notifier.invalidate_range_start(rng)
    a, b = mn.MMUIntervalNotifier(), mn.MMUIntervalNotifier()
    mn.interval_notifier_insert(a, mm, PAGE, PAGE, idriver)
    mn.interval_notifier_insert(b, mm, PAGE, PAGE, idriver)
    assert _state(mm).deferred == [b, a]  # hlist_add_head
    notifier.invalidate_range_end(rng)
    assert list(_state(mm).itree) == [first, b, a]  # equal starts keep insertion order


# -- invalidation -----------------------------------------------------------------


def test_hit_goes_odd_passes_odd_cur_seq_and_ends_even(kernel, idriver, mm):
    sub = _insert(mm, idriver, 0x10000, 4)
    seen: list[int] = []
    idriver.hook = lambda s, r, cur: seen.append(_state(mm).invalidate_seq)
    mm.mmap(4 * PAGE, addr=0x10000)
    mm.madvise_dontneed(0x11000, PAGE)
    assert idriver.hits(sub) == [(sub, Event.CLEAR, 0x11000, 0x12000, True, 3)]
    assert seen == [3] and sub.invalidate_seq == 3
    assert _state(mm).invalidate_seq == 4 and _state(mm).active_invalidate_ranges == 0


def test_every_start_counts_even_a_miss(kernel, idriver, mm):
    _insert(mm, idriver, 0x10000)
    ranges = [_range(mm, 0x40000, 0x41000) for _ in range(3)]
    for rng in ranges:
        notifier.invalidate_range_start(rng)
    assert _state(mm).active_invalidate_ranges == 3 and _state(mm).invalidate_seq == 2
    for rng in ranges:
        notifier.invalidate_range_end(rng)
    assert _state(mm).active_invalidate_ranges == 0 and _state(mm).invalidate_seq == 2
    assert idriver.log == []


def test_last_is_inclusive_and_range_end_exclusive(kernel, idriver, mm):
    sub = _insert(mm, idriver, 0x10000)  # [0x10000, 0x10fff]
    for start, end, hit in [(0xF000, 0x10000, False), (0x11000, 0x12000, False), (0xF000, 0x10001, True),
                            (0x10FFF, 0x11000, True)]:
        idriver.log.clear()
        rng = _range(mm, start, end)
        notifier.invalidate_range_start(rng)
        notifier.invalidate_range_end(rng)
        assert bool(idriver.hits(sub)) is hit, (hex(start), hex(end))


def test_one_call_per_intersecting_subscription_in_address_order(kernel, idriver, mm):
    subs = [_insert(mm, idriver, addr) for addr in (0x30000, 0x10000, 0x20000, 0x90000)]
    rng = _range(mm, 0x10000, 0x31000)
    notifier.invalidate_range_start(rng)
    notifier.invalidate_range_end(rng)
    assert [entry[0] for entry in idriver.log] == [subs[1], subs[2], subs[0]]


def test_interval_subscriptions_are_called_before_list_subscribers(kernel, idriver, mm):
    order: list[str] = []
    listed = RecordingDriver()
    kernel.drivers.add(listed)
    mn.get(listed, mm)
    _insert(mm, idriver, 0)
    idriver.hook = lambda s, r, cur: order.append("interval")
    notifier.invalidate_range_start(_range(mm, 0, PAGE))
    order.extend(entry[0] for entry in listed.log if entry[0] == "start")
    assert order == ["interval", "start"]


def test_nonblock_refusal_unwinds_and_skips_later_and_list_subscribers(kernel, mm):
    refusing = IntervalRecorder(refuse_nonblock=True)
    kernel.drivers.add(refusing)
    listed = RecordingDriver()
    kernel.drivers.add(listed)
    mn.get(listed, mm)
    a, b = _insert(mm, refusing, 0), _insert(mm, refusing, PAGE)
    rng = _range(mm, 0, 2 * PAGE)
    assert notifier.invalidate_range_start_nonblock(rng) == -errno.EAGAIN
    assert [entry[0] for entry in refusing.log] == [a]  # b is never called
    assert not [entry for entry in listed.log if entry[0] == "start"]
    state = _state(mm)
    assert state.active_invalidate_ranges == 0 and state.invalidate_seq == 4  # unwound: odd, then even
    assert kernel.warnings == []
    del b


def test_blockable_refusal_is_a_warn_and_counts_as_done(kernel, mm):
    refusing = IntervalRecorder(refuse_nonblock=True)
    kernel.drivers.add(refusing)
    _insert(mm, refusing, 0)
    refusing.refuse_nonblock = False
    refusing.hook = None
    rng = _range(mm, 0, PAGE)

    def refuse(*_args: object) -> bool:
        return False

    kernel.drivers.ops_of(refusing).invalidate = lambda s, r, c: refuse()
    notifier.invalidate_range_start(rng)
    assert any("refused the blockable" in w for w in kernel.warnings)
    notifier.invalidate_range_end(rng)
    assert _state(mm).invalidate_seq == 4


def test_list_refusal_after_interval_success_leaves_the_seq_odd(kernel, idriver, mm):
    """J-4 (reading of the code): nothing ends the interval part when a list subscriber refuses."""
    refusing = RecordingDriver(refuse_nonblock=True)
    kernel.drivers.add(refusing)
    mn.get(refusing, mm)
    sub = _insert(mm, idriver, 0)
    assert notifier.invalidate_range_start_nonblock(_range(mm, 0, PAGE)) == -errno.EAGAIN
    state = _state(mm)
    assert state.active_invalidate_ranges == 1 and state.invalidate_seq == 3 and sub.invalidate_seq == 3


def test_later_kernels_end_only_the_list_after_an_interval_refusal():
    kernel = mn.Kernel(frames=64, end_after_failed_start=True)
    refusing = IntervalRecorder(refuse_nonblock=True)
    kernel.drivers.add(refusing)
    listed = RecordingDriver()
    kernel.drivers.add(listed)
    mm = mn.MM(kernel)
    mn.get(listed, mm)
    _insert(mm, refusing, 0)
    assert notifier.invalidate_range_start_nonblock(_range(mm, 0, PAGE)) == -errno.EAGAIN
    assert [entry[0] for entry in listed.log if entry[0] in ("start", "end")] == []
    assert _state(mm).active_invalidate_ranges == 0


# -- remove ---------------------------------------------------------------------


def test_idle_remove_takes_it_out_and_drops_the_pin(kernel, idriver, mm):
    sub = _insert(mm, idriver, 0)
    mn.interval_notifier_remove(sub)
    assert not sub.in_tree and not sub.inserted and len(_state(mm).itree) == 0
    assert mm.mm_count.value == 1 and sub.mm is mm
    rng = _range(mm, 0, PAGE)
    notifier.invalidate_range_start(rng)
    notifier.invalidate_range_end(rng)
    assert idriver.hits(sub) == []


def test_remove_of_a_pending_insert_does_not_wait(kernel, idriver, mm):
    _insert(mm, idriver, 0)
    rng = _range(mm, 0, PAGE)
    notifier.invalidate_range_start(rng)
    pending = _insert(mm, idriver, PAGE)
    assert pending.deferred
    mn.interval_notifier_remove(pending)  # single-threaded: would hang if it waited
    assert not pending.deferred and _state(mm).deferred == [] and mm.mm_count.value == 2
    notifier.invalidate_range_end(rng)
    assert pending not in _state(mm).itree


def test_remove_during_a_hit_waits_for_the_last_end(kernel, idriver, mm):
    sub = _insert(mm, idriver, 0)
    rng = _range(mm, 0, PAGE)
    notifier.invalidate_range_start(rng)
    done = threading.Event()

    def remove() -> None:
        mn.interval_notifier_remove(sub)
        done.set()

    thread = _in_thread(remove)
    time.sleep(0.05)
    assert not done.is_set() and sub.deferred and sub.in_tree
    notifier.invalidate_range_end(rng)
    thread.join(5)
    assert done.is_set() and not sub.in_tree and mm.mm_count.value == 1


def test_remove_is_not_allowed_in_atomic_context(kernel, idriver, mm):
    sub = _insert(mm, idriver, 0)
    with mm.page_table_lock, pytest.raises(mn.SleepInAtomicError):
        mn.interval_notifier_remove(sub)
    assert sub.inserted


def test_kfree_after_remove_poisons_the_subscription(kernel, idriver, mm):
    sub = _insert(mm, idriver, 0)
    mn.interval_notifier_remove(sub)
    kmem.kfree(sub)
    with pytest.raises(mn.UseAfterFreeError, match="freed at"):
        _ = sub.invalidate_seq


# -- readers ----------------------------------------------------------------------


def test_read_begin_is_immediate_when_idle_and_retry_iff_set_seq(kernel, idriver, mm):
    sub = _insert(mm, idriver, 0)
    seq = mn.interval_read_begin(sub)
    assert seq == 1 and not mn.interval_read_retry(sub, seq) and not mn.interval_check_retry(sub, seq)
    rng = _range(mm, PAGE, 2 * PAGE)  # a miss: no set_seq
    notifier.invalidate_range_start(rng)
    notifier.invalidate_range_end(rng)
    assert not mn.interval_read_retry(sub, seq)
    rng = _range(mm, 0, PAGE)
    notifier.invalidate_range_start(rng)
    notifier.invalidate_range_end(rng)
    assert mn.interval_read_retry(sub, seq) and mn.interval_check_retry(sub, seq)
    assert not mn.interval_read_retry(sub, mn.interval_read_begin(sub))


def test_no_set_seq_means_no_retry(kernel, mm):
    lazy = IntervalRecorder(set_seq=False)
    kernel.drivers.add(lazy)
    sub = _insert(mm, lazy, 0)
    seq = mn.interval_read_begin(sub)
    rng = _range(mm, 0, PAGE)
    notifier.invalidate_range_start(rng)
    notifier.invalidate_range_end(rng)
    assert len(lazy.hits(sub)) == 1 and not mn.interval_read_retry(sub, seq)


def test_read_begin_waits_while_its_invalidation_runs(kernel, idriver, mm):
    sub = _insert(mm, idriver, 0)
    rng = _range(mm, 0, PAGE)
    notifier.invalidate_range_start(rng)
    got: list[int] = []
    thread = _in_thread(lambda: got.append(mn.interval_read_begin(sub)))
    time.sleep(0.05)
    assert got == []
    notifier.invalidate_range_end(rng)
    thread.join(5)
    assert got == [3] and not mn.interval_read_retry(sub, got[0])


def test_read_begin_of_an_insert_during_a_range_waits_for_its_end(kernel, idriver, mm):
    rng = _range(mm, 0, PAGE)
    _insert(mm, idriver, 0x100000)
    notifier.invalidate_range_start(rng)
    sub = _insert(mm, idriver, 0x200000)
    got: list[int] = []
    thread = _in_thread(lambda: got.append(mn.interval_read_begin(sub)))
    time.sleep(0.05)
    assert got == []
    notifier.invalidate_range_end(rng)
    thread.join(5)
    assert got == [3]


# -- teardown ---------------------------------------------------------------------


def test_exit_sends_one_blockable_release_over_everything_and_keeps_the_tree(kernel, idriver, mm):
    subs = [_insert(mm, idriver, addr) for addr in (0, 0x7FFF0000)]
    mm.exit()
    for sub in subs:
        assert idriver.hits(sub)[0] == (sub, Event.RELEASE, 0, ULONG_MAX, True, 3)
        assert sub.in_tree
    releases = [entry for entry in idriver.log if entry[1] is Event.RELEASE]
    assert len(releases) == 2
    assert not mm.freed and _state(mm).invalidate_seq % 2 == 0
    for sub in subs:
        mn.interval_notifier_remove(sub)
    assert mm.freed


def test_exit_with_list_subscribers_runs_interval_release_first(kernel, idriver, mm):
    listed = RecordingDriver()
    kernel.drivers.add(listed)
    order: list[str] = []
    sub = _insert(mm, idriver, 0)
    listed_sub = mn.get(listed, mm)
    idriver.hook = lambda s, r, c: order.append("interval") if r.event is Event.RELEASE else None
    mm.exit()
    order.extend(entry[0] for entry in listed.log if entry[0] == "release")
    assert order == ["interval", "release"]
    mn.interval_notifier_remove(sub)
    mn.put(listed_sub)
    mn.synchronize(kernel)
    assert mm.freed


def test_insert_after_exit_is_silently_accepted_as_in_5_5(kernel, idriver, mm):
    """J-3: 5.5 checks mm_count, so an insert on an exited mm that has the tree succeeds and is never invalidated."""
    keep = _insert(mm, idriver, 0)
    mm.exit()
    late = _insert(mm, idriver, PAGE)
    assert late.in_tree and kernel.warnings == []
    mn.interval_notifier_remove(late)
    mn.interval_notifier_remove(keep)


def test_insert_after_exit_is_refused_with_the_2020_fix():
    kernel = mn.Kernel(frames=64, interval_insert_checks_mm_users=True)
    driver = IntervalRecorder()
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    keep = _insert(mm, driver, 0)
    mm.exit()
    late = mn.MMUIntervalNotifier()
    with pytest.raises(mn.InvalidArgumentError, match="exited"):
        mn.interval_notifier_insert(late, mm, PAGE, PAGE, driver)
    assert kernel.warnings and not late.inserted and mm.mm_count.value == 1  # only keep's pin
    mn.interval_notifier_remove(keep)


def test_first_insert_on_an_exited_mm_is_the_register_bug(kernel, idriver, mm):
    mm.mmgrab()
    mm.exit()
    with pytest.raises(mn.MisuseError, match="mm_users == 0"):
        _insert(mm, idriver, 0)
