"""Unit tests of mmu_notifier.invariants: each check flags what it names, and only that."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

import pytest
from mirror_driver import MirrorDriver, MirrorSub

import mmu_notifier as mn
from mmu_notifier import invariants, kmem, notifier
from mmu_notifier.invariants import Monitor, Recorder
from mmu_notifier.range import Event, Range

PAGE = 4096


class Sub(mn.MMUNotifier):
    pass


class Plain(mn.Driver):
    """A correct driver, with switches for the mistakes the tests need."""

    name = "plain"
    version = "1"

    def __init__(self) -> None:
        super().__init__()
        self.refuse = 0
        self.free_inside_start = False
        self.kernel: mn.Kernel | None = None

    @mn.hookimpl
    def alloc_notifier(self, mm: mn.MM) -> mn.MMUNotifier:
        return Sub()

    @mn.hookimpl
    def free_notifier(self, subscription: mn.MMUNotifier) -> None:
        pass

    @mn.hookimpl
    def release(self, subscription: mn.MMUNotifier, mm: mn.MM) -> None:
        pass

    @mn.hookimpl
    def invalidate_range_start(self, subscription: mn.MMUNotifier, range: Range) -> int:
        if self.free_inside_start:
            assert self.kernel is not None
            ops = self.kernel.drivers.ops_of(self)
            assert ops.free_notifier is not None
            ops.free_notifier(subscription)  # a driver freeing while its own callback runs
        return self.refuse

    @mn.hookimpl
    def invalidate_range_end(self, subscription: mn.MMUNotifier, range: Range) -> None:
        pass


@dataclass
class World:
    kernel: mn.Kernel
    driver: Plain
    ops: Any
    recorder: Recorder
    mm: mn.MM


@pytest.fixture
def world() -> World:
    kernel = mn.Kernel(frames=64)
    driver = Plain()
    driver.kernel = kernel
    ops = kernel.drivers.add(driver)
    return World(kernel, driver, ops, Recorder().install(kernel), mn.MM(kernel))


def checks(found: list[invariants.InvariantViolation]) -> set[str]:
    return {v.check for v in found}


def test_a_correct_lifetime_is_clean(world: World) -> None:
    sub = mn.get(world.driver, world.mm)
    assert mn.get(world.driver, world.mm) is sub
    start = world.mm.mmap(2 * PAGE)
    world.mm.fault(start, write=True)
    world.mm.munmap(start, 2 * PAGE)
    mn.put(sub)
    mn.put(sub)
    mn.synchronize(world.kernel)
    rec = world.recorder.record_of(sub)
    assert rec.allocated and rec.frees == 1
    assert world.recorder.violations == []
    assert world.recorder.check_pairing() == [] and world.recorder.check_frees(settled=True) == []
    assert world.recorder.check_leaks() == [] and invariants.check_kernel(world.kernel) == []


def test_free_while_a_callback_runs_is_flagged(world: World) -> None:
    mn.get(world.driver, world.mm)
    world.driver.free_inside_start = True
    notifier.invalidate_range_start(Range(world.mm, 0, PAGE, Event.CLEAR))
    found = [v.message for v in world.recorder.violations if v.check == invariants.ALLOC_FREE]
    assert any("overlaps its running invalidate_range_start" in m for m in found), found
    assert any("while it is still linked" in m for m in found), found


def test_end_without_start_and_start_without_end(world: World) -> None:
    sub = mn.get(world.driver, world.mm)
    rng = Range(world.mm, 0, PAGE, Event.CLEAR, flags=1)
    world.ops.invalidate_range_end(sub, rng)  # nobody started it
    assert checks(world.recorder.violations) == {invariants.PAIRING}
    other = Range(world.mm, PAGE, 2 * PAGE, Event.CLEAR, flags=1)
    world.ops.invalidate_range_start(sub, other)  # and this one is never ended
    found = world.recorder.check_pairing()
    assert len(found) == 1 and "never its end" in found[0].message
    assert world.recorder.check_pairing() == []  # reported once


def test_a_start_is_forgiven_its_end_once_the_subscription_was_unlinked(world: World) -> None:
    sub = mn.get(world.driver, world.mm)
    world.ops.invalidate_range_start(sub, Range(world.mm, 0, PAGE, Event.CLEAR, flags=1))
    mn.put(sub)  # the last put came between start and end: the end's walk will not see it
    assert world.recorder.check_pairing() == []


def test_refusals(world: World) -> None:
    mn.get(world.driver, world.mm)
    world.driver.refuse = -errno.EAGAIN
    notifier.invalidate_range_start(Range(world.mm, 0, PAGE, Event.CLEAR))  # blockable: refusing is a bug
    assert checks(world.recorder.violations) == {invariants.NONBLOCK} and world.kernel.warnings
    world.recorder.violations.clear()
    rng = Range(world.mm, 0, PAGE, Event.UNMAP)
    assert notifier.invalidate_range_start_nonblock(rng) == -errno.EAGAIN  # legal
    assert world.recorder.violations == [] and world.recorder.check_pairing() == []
    assert [name for name, _ in world.recorder.refusals] == ["plain"]
    world.driver.refuse = -errno.EINVAL
    notifier.invalidate_range_start_nonblock(Range(world.mm, 0, PAGE, Event.UNMAP))
    assert "only -EAGAIN is legal" in world.recorder.violations[0].message


def test_callback_after_release_is_flagged(world: World) -> None:
    sub = mn.get(world.driver, world.mm)
    world.mm.exit()
    assert world.recorder.record_of(sub).releases == 1 and world.recorder.violations == []
    world.ops.invalidate_range_start(sub, Range(world.mm, 0, PAGE, Event.CLEAR, flags=1))
    assert checks(world.recorder.violations) == {invariants.RELEASE}
    assert "after its release" in world.recorder.violations[0].message


def test_a_driver_freeing_its_own_subscription_is_flagged(world: World) -> None:
    sub = mn.get(world.driver, world.mm)
    with world.kernel.srcu.read_section():  # a walker holds the grace period open
        mn.put(sub)
        kmem.kfree(sub)  # the v5.3 habit; the free after the grace period comes on top
    mn.synchronize(world.kernel)
    found = [v.message for v in world.recorder.violations]
    assert any("freed twice" in m for m in found), found
    assert world.kernel.bugs  # the core's own poisoning caught the double free as well


def test_leaks_and_missed_frees(world: World) -> None:
    sub = mn.get(world.driver, world.mm)
    mn.synchronize(world.kernel)
    found = world.recorder.check_leaks()
    assert checks(found) == {invariants.LEAK} and "a get without its put" in found[0].message
    assert world.recorder.check_leaks(held=[sub]) == []


def test_coherence_names_the_invalidation(world: World) -> None:
    start = world.mm.mmap(2 * PAGE)
    pfn = world.mm.fault(start, write=True)
    vpn = start // PAGE
    assert invariants.check_coherence(world.mm, {vpn: pfn}) == []
    world.mm.madvise_dontneed(start, PAGE)
    found = invariants.check_coherence(world.mm, {vpn: pfn}, [(world.mm.id, start, start + PAGE, "CLEAR")], "dev")
    assert checks(found) == {invariants.COHERENCE}
    assert "after the invalidation(s) CLEAR" in found[0].message and "stale translation" in found[0].message
    assert invariants.check_exit_coherence(world.mm, {}) == []
    assert checks(invariants.check_exit_coherence(world.mm, {vpn: pfn})) == {invariants.EXIT_COHERENCE}


def test_registration(world: World) -> None:
    sub = mn.get(world.driver, world.mm)
    assert invariants.check_registration(world.mm, world.ops, [sub]) == []
    found = invariants.check_registration(world.mm, world.ops, [sub, sub])
    assert "users=1 but 2 attach(es)" in found[0].message
    second = Sub()
    mn.register(second, world.mm, driver=world.driver)  # a second subscription of the same driver on one mm
    found = invariants.check_registration(world.mm, world.ops, [sub, second])
    assert {v.check for v in found} == {invariants.REGISTRATION} and len(found) >= 2


def test_format_explains_each_check() -> None:
    text = invariants.format_violations([invariants.InvariantViolation(invariants.COHERENCE, "x")])
    assert text.startswith("[coherence] x") and invariants.CHECKS[invariants.COHERENCE] in text


class StaleMirror(MirrorDriver):
    """Forgets to drop translations in its start."""

    @mn.hookimpl
    def invalidate_range_start(self, subscription: MirrorSub, range: Range) -> int:
        with subscription.lock:
            subscription.active += 1
        return 0


@pytest.mark.parametrize("driver_class", [MirrorDriver, StaleMirror], ids=["mirror", "stale"])
def test_monitor_end_to_end(driver_class: type[MirrorDriver]) -> None:
    kernel = mn.Kernel(frames=64)
    ops = kernel.drivers.add(driver_class())
    assert ops.exerciser is not None
    ex = ops.exerciser(kernel)
    monitor = Monitor(kernel, [ex])
    mm = monitor.track_mm(mn.MM(kernel))
    handles = [monitor.attached("mirror", ex.attach(mm)) for _ in range(2)]
    start = mm.mmap(2 * PAGE)
    ex.access(handles[0], start)
    assert monitor.check() == []
    mm.madvise_dontneed(start, PAGE)
    found = monitor.check()
    if driver_class is StaleMirror:
        assert checks(found) == {invariants.COHERENCE}
        return
    assert found == []
    for handle in handles:
        monitor.detached("mirror", handle)
        ex.detach(handle)
    mn.synchronize(kernel)
    assert monitor.check(settled=True) == []
    mm.exit()
    mn.synchronize(kernel)
    assert monitor.check(settled=True) == []


def test_monitor_flags_a_forgotten_put() -> None:
    kernel = mn.Kernel(frames=64)
    ops = kernel.drivers.add(MirrorDriver())
    assert ops.exerciser is not None
    ex = ops.exerciser(kernel)
    monitor = Monitor(kernel, [ex])
    mm = monitor.track_mm(mn.MM(kernel))
    handle = ex.attach(mm)  # attached, but the monitor is told it was detached without the put
    mn.synchronize(kernel)
    found = monitor.check(settled=True)
    assert invariants.REGISTRATION in checks(found) and invariants.LEAK in checks(found)
    assert handle.subscription.users == 1
