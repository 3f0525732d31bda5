"""Interval notifiers (5.5): invariants 17 to 23 of the reference, for drivers declaring ``interval``.

A driver with the :data:`~mmu_notifier.exerciser.INTERVAL` capability inserts
interval subscriptions in ``map_range`` and removes them in ``detach``. The
checks find them in the mm's interval tree (the world has no other driver),
watch every ``invalidate`` call with an
:class:`~mmu_notifier.invariants.interval.IntervalRecorder`, and drive
ranges both through the CPU operations of :class:`~mmu_notifier.MM` and
directly through the dispatchers (to hold a range open while they look).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from mmu_notifier import exerciser as contract
from mmu_notifier import notifier
from mmu_notifier.conformance.harness import World
from mmu_notifier.conformance.plugin import require
from mmu_notifier.exerciser import Handle
from mmu_notifier.interval import MMUIntervalNotifier, interval_read_begin, interval_read_retry
from mmu_notifier.invariants import InvariantViolation as Violation
from mmu_notifier.invariants import format_violations
from mmu_notifier.invariants import interval as checks
from mmu_notifier.invariants.interval import IntervalRecorder
from mmu_notifier.itree import ULONG_MAX
from mmu_notifier.mm import MM, Prot
from mmu_notifier.range import Event, Range

_WHY = "the driver inserts no interval notifiers, so there is nothing of 5.5's interval scheme to check"


def _fail(found: list[Violation], context: str) -> None:
    if found:
        lines = format_violations(found)
        for name in dict.fromkeys(v.check for v in found):
            if name in checks.CHECKS:
                lines += f"\n  ({name}: {checks.CHECKS[name]})"
        pytest.fail(f"{context}:\n{lines}", pytrace=False)


def _setup(world: World, pages: int = 4) -> tuple[MM, Handle, tuple[int, int], IntervalRecorder]:
    require(world, contract.INTERVAL, _WHY)
    recorder = IntervalRecorder().install(world.kernel)
    mm = world.new_mm()
    handle = world.attach(mm)
    span = world.region(mm, pages, handle=handle)
    for addr in range(*span, world.page):
        mm.fault(addr, write=True)
    world.touch(handle, *span, write=True)
    return mm, handle, span, recorder


def _subs(mm: MM) -> list[MMUIntervalNotifier]:
    state = checks.state_of(mm)
    return list(state.itree) if state is not None else []


def _state_check(mm: MM, recorder: IntervalRecorder, context: str, active: int = 0) -> None:
    _fail(recorder.take_violations() + checks.check_state(mm, active), context)


def _open(mm: MM, start: int, end: int, event: Event = Event.CLEAR) -> Range:
    rng = Range(mm, start, end, event)
    notifier.invalidate_range_start(rng)
    return rng


def _close(rng: Range) -> None:
    notifier.invalidate_range_end(rng)


def test_interval_sequence_parity(mmu_world: World) -> None:
    """The mm's sequence is even when idle, grows through each hit, and every cur_seq is odd (inv. 17)."""
    world = mmu_world
    mm, handle, (start, end), recorder = _setup(world)
    if not _subs(mm):
        pytest.fail(f"map_range of [{start:#x}, {end:#x}) inserted no interval subscription on mm {mm.id}, though "
                    f"the driver declares the interval capability", pytrace=False)
    state = checks.state_of(mm)
    assert state is not None
    _state_check(mm, recorder, "after map_range and device accesses")
    page = world.page
    operations: list[tuple[str, Callable[[], object]]] = [
        ("madvise(DONTNEED) of one page", lambda: mm.madvise_dontneed(start, page)),
        ("migration of a page", lambda: mm.migrate(start + page)),
        ("mprotect(READ)", lambda: mm.mprotect(start, end - start, Prot.READ)),
        ("munmap of the tail", lambda: mm.munmap(end - page, page)),
    ]
    for name, operation in operations:
        world.touch(handle, start, end - page, write=False)
        before, calls = state.invalidate_seq, len(recorder.calls)
        operation()
        hit = len(recorder.calls) > calls
        after = state.invalidate_seq
        if after % 2 or after < before or (hit and after <= before):
            pytest.fail(f"{name}: the mm's sequence went from {before} to {after}; it must end even, and grow when "
                        f"the range hit a subscription ({'it did' if hit else 'it did not'})", pytrace=False)
        _state_check(mm, recorder, f"after {name}")


def test_interval_deferred_changes_at_last_end(mmu_world: World) -> None:
    """An insert while a hit is active is deferred to the last of the active ranges' ends (inv. 18)."""
    world = mmu_world
    mm, handle, (start, _), recorder = _setup(world)
    state = checks.state_of(mm)
    assert state is not None
    before = set(map(id, _subs(mm)))
    outer = _open(mm, start, start + world.page)
    if not state.invalidate_seq & 1:
        pytest.fail("a range over a mapped page did not make the mm's sequence odd", pytrace=False)
    inner = _open(mm, 0, world.page)  # a miss, nested
    tree = list(state.itree)
    world.region(mm, 2, handle=handle)  # map_range during the hit: must be deferred
    if list(state.itree) != tree:
        pytest.fail("the interval tree changed while the mm's sequence was odd (an insert must be deferred)",
                    pytrace=False)
    pending = [sub for sub in state.deferred if id(sub) not in before]
    if not pending:
        pytest.fail("map_range during an active hit left nothing on the deferred list", pytrace=False)
    _close(inner)
    if any(sub.in_tree for sub in pending) or not state.invalidate_seq & 1:
        pytest.fail("the deferred insert was applied (or the sequence went even) at an end that was not the last",
                    pytrace=False)
    _close(outer)
    if not all(sub.in_tree for sub in pending) or state.deferred:
        pytest.fail("the last end did not apply the deferred list", pytrace=False)
    _state_check(mm, recorder, "after the last end")


def test_interval_every_start_counted(mmu_world: World) -> None:
    """Every start counts as active until its end, hit or miss; the sequence is even only after the last (inv. 19)."""
    world = mmu_world
    mm, _, (start, _), recorder = _setup(world)
    far = ULONG_MAX - 16 * world.page  # nothing is mapped or subscribed there
    misses = [_open(mm, far, far + world.page), _open(mm, far + world.page, far + 2 * world.page)]
    _state_check(mm, recorder, "with two misses open", active=2)
    state = checks.state_of(mm)
    assert state is not None
    if state.invalidate_seq & 1:
        pytest.fail("ranges that hit no subscription made the sequence odd", pytrace=False)
    hit = _open(mm, start, start + world.page)
    _state_check(mm, recorder, "with two misses and a hit open", active=3)
    for left, rng in zip((2, 1), (*misses,), strict=True):
        _close(rng)
        _state_check(mm, recorder, f"with {left} range(s) still open", active=left)
        if not state.invalidate_seq & 1:
            pytest.fail("the sequence went even before the last active range ended", pytrace=False)
    _close(hit)
    _state_check(mm, recorder, "after every range ended")


def test_interval_one_invalidate_per_intersecting_subscription(mmu_world: World) -> None:
    """Each range calls each subscription of the tree as it began that it intersects, exactly once (inv. 20)."""
    world = mmu_world
    mm, handle, _, recorder = _setup(world)
    for _ in range(2):
        world.region(mm, 3, handle=handle)
    state = checks.state_of(mm)
    assert state is not None
    probes: list[tuple[int, int]] = []
    for sub in _subs(mm):
        probes += [(sub.start - world.page, sub.start), (sub.last, sub.last + 1), (sub.last + 1, sub.last + 2),
                   (sub.start - 1, sub.start + 1), (sub.start, sub.last + 1)]
    probes.append((0, ULONG_MAX))
    for probe_start, probe_end in probes:
        expected = checks.expected_hits(state, probe_start, probe_end)
        rng = _open(mm, probe_start, probe_end)
        _close(rng)
        got = [call.sub for call in recorder.calls_for(rng)]
        if got != expected:
            pytest.fail(f"range [{probe_start:#x}, {probe_end:#x}) called {[repr(s) for s in got]}; expected each "
                        f"intersecting subscription once, in address order: {[repr(s) for s in expected]}",
                        pytrace=False)
    # a subscription inserted while a range runs is not called by it
    spare = mm.mmap(world.page)
    rng = _open(mm, spare, spare + world.page)
    world.exerciser.map_range(handle, spare, spare + world.page)
    _close(rng)
    late = recorder.calls_for(rng)
    if late:
        pytest.fail(f"a range called {late[0].sub!r}, inserted after the range began", pytrace=False)
    _state_check(mm, recorder, "after the probes")


def test_interval_read_begin_and_retry(mmu_world: World) -> None:
    """read_begin waits exactly while its epoch runs; read_retry is true iff set_seq ran since (inv. 21)."""
    world = mmu_world
    mm, _, (start, _), recorder = _setup(world)
    sub = checks.expected_hits(checks.state_of(mm), start, start + world.page)[0]  # type: ignore[arg-type]
    seq = interval_read_begin(sub)
    if interval_read_retry(sub, seq):
        pytest.fail("read_retry is true right after read_begin with no invalidation", pytrace=False)
    rng = _open(mm, start, start + world.page)
    (call,) = recorder.calls_for(rng)
    if interval_read_retry(sub, seq) != call.set_seq:
        pytest.fail(f"after an invalidation that {'called' if call.set_seq else 'did not call'} set_seq, read_retry "
                    f"is {interval_read_retry(sub, seq)}", pytrace=False)
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.append(interval_read_begin(sub)), name="reader", daemon=True)
    reader.start()
    reader.join(0.1 if call.set_seq else 5)
    if call.set_seq and got:
        _close(rng)
        pytest.fail("read_begin returned while the invalidation that set its sequence was still active",
                    pytrace=False)
    if not call.set_seq and not got:
        _close(rng)
        reader.join(5)
        pytest.fail("read_begin waited for an invalidation that did not call set_seq on its subscription",
                    pytrace=False)
    _close(rng)
    reader.join(5)
    if not got:
        pytest.fail("read_begin did not return after the invalidation ended", pytrace=False)
    if interval_read_retry(sub, got[0]):
        pytest.fail("read_retry is true for a read_begin made after the invalidation ended", pytrace=False)
    _state_check(mm, recorder, "after the readers")


def test_interval_nothing_after_remove(mmu_world: World) -> None:
    """After detach (remove), no invalidate reaches the subscriptions and the mm pins are dropped (inv. 22)."""
    world = mmu_world
    require(world, contract.INTERVAL, _WHY)
    recorder = IntervalRecorder().install(world.kernel)
    mm = world.new_mm()
    base = mm.mm_count.value
    handle = world.attach(mm)
    start, end = world.region(mm, 3, handle=handle)
    world.touch(handle, start, end, write=True)
    subs = _subs(mm)
    world.detach(handle)
    left = [sub for sub in subs if sub.in_tree or sub.deferred or sub.inserted]
    if left:
        pytest.fail(f"after the last detach, {left[0]!r} is still inserted: detach must remove every interval "
                    f"subscription map_range inserted", pytrace=False)
    calls = len(recorder.calls)
    mm.madvise_dontneed(start, world.page)
    mm.munmap(start, end - start)
    after = [call for call in recorder.calls[calls:] if any(call.sub is sub for sub in subs)]
    if after:
        pytest.fail(f"invalidate was called on {after[0].sub!r} after its remove returned", pytrace=False)
    world.settle("after detach and synchronize")
    if mm.mm_count.value != base:
        pytest.fail(f"mm {mm.id}: mm_count is {mm.mm_count.value}, was {base} before the attach: remove must drop "
                    f"the pin insert took", pytrace=False)
    _state_check(mm, recorder, "after detach")


def test_interval_release_at_exit(mmu_world: World) -> None:
    """At exit every subscription gets one blockable RELEASE invalidate over everything (inv. 23)."""
    world = mmu_world
    mm, handle, _, recorder = _setup(world)
    world.region(mm, 2, handle=handle)
    subs = _subs(mm)
    calls = len(recorder.calls)
    mm.exit()
    releases = [call for call in recorder.calls[calls:] if call.range.event is Event.RELEASE]
    for sub in subs:
        mine = [call for call in releases if call.sub is sub]
        if len(mine) != 1:
            pytest.fail(f"{sub!r} got {len(mine)} RELEASE invalidation(s) at exit; expected exactly one",
                        pytrace=False)
        rng = mine[0].range
        if (rng.start, rng.end, rng.blockable) != (0, ULONG_MAX, True):
            pytest.fail(f"the exit range was {rng!r}; expected [0, ULONG_MAX), blockable", pytrace=False)
    _state_check(mm, recorder, "after exit")
    world.detach(handle)
    world.settle("after exit and detach")
