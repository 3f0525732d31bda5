"""Teardown: release on exit, nothing after release, detach after exit, and exit coherence.

Models invariants 9 to 11 and 13 of the reference's section 7: mm teardown
runs every linked subscription's release once and unlinks it; users and the
mm pin are left to the driver's own put, which still frees exactly once.
"""

from __future__ import annotations

import pytest

from mmu_notifier import exerciser as contract
from mmu_notifier import invariants
from mmu_notifier.conformance.harness import World
from mmu_notifier.conformance.plugin import refuse, require
from mmu_notifier.exerciser import Handle
from mmu_notifier.kmem import is_freed
from mmu_notifier.mm import MM


def _attached(world: World, handles: int = 2) -> tuple[MM, list[Handle], tuple[int, int]]:
    mm = world.new_mm()
    attached = [world.attach(mm) for _ in range(handles)]
    span = world.region(mm, 3, handle=attached[0])
    for handle in attached[1:]:
        world.exerciser.map_range(handle, *span)
    for handle in attached:
        world.touch(handle, *span, write=True)
    return mm, attached, span


def test_release_once_on_exit(mmu_world: World) -> None:
    """The mm exits with attaches held: release runs exactly once on the driver's one subscription (inv. 9)."""
    world = mmu_world
    require(world, contract.RELEASE, "the driver has no release callback, so exit calls nothing of it")
    mm, attached, _ = _attached(world)
    sub = attached[0].subscription
    assert sub is not None  # a driver with release registers a list notifier
    mm.exit()
    rec = world.monitor.recorder.record_of(sub)
    if rec.releases != 1:
        pytest.fail(f"mm {mm.id} exited with {len(attached)} attaches held; release ran {rec.releases} time(s) on "
                    f"{sub!r}, expected exactly once", pytrace=False)
    world.check("after exit")
    for handle in attached:
        world.detach(handle)
    world.settle("after the detaches that followed exit")
    if world.monitor.recorder.record_of(sub).releases != 1:
        pytest.fail("release ran again after exit (detach or put must never call release)", pytrace=False)


def test_no_callback_after_release(mmu_world: World) -> None:
    """After exit's release (or teardown's unlink), no callback reaches the subscription (inv. 13)."""
    world = mmu_world
    refuse(world, contract.INTERVAL_ONLY, "the driver registers no list notifier, so nothing of it is released; "
                                         "check_interval's nothing-after-remove and release-at-exit cover it")
    mm, attached, span = _attached(world)
    sub = attached[0].subscription
    assert sub is not None  # interval_only drivers were skipped above
    calls_at_exit: dict[str, int] = {}
    mm.exit()
    rec = world.monitor.recorder.record_of(sub)
    calls_at_exit = dict(rec.calls)
    # life goes on elsewhere: another process with the same driver, its invalidations, device accesses
    other = world.new_mm()
    handle = world.attach(other)
    start, end = world.region(other, 2, handle=handle)
    world.touch(handle, start, end, write=True)
    other.madvise_dontneed(start, end - start)
    other.munmap(start, end - start)
    for old in attached:  # device accesses through the dead mm's attaches
        world.access(old, span[0], tries=1, verify=False)
    world.detach(handle)
    for old in attached:
        world.detach(old)
    world.settle("after exit, activity elsewhere and the detaches")
    later = {name: n - calls_at_exit.get(name, 0) for name, n in rec.calls.items() if n > calls_at_exit.get(name, 0)}
    if later:
        pytest.fail(f"after mm {mm.id} exited, {sub!r} still received {later}", pytrace=False)


def test_detach_after_exit_frees_once(mmu_world: World) -> None:
    """Detaching after the mm exited still frees the subscription exactly once; the mm_struct goes too (inv. 9)."""
    world = mmu_world
    mm, attached, _ = _attached(world)
    sub = attached[0].subscription
    mm.exit()
    world.check("after exit")
    for handle in attached:
        world.detach(handle)
    world.settle("after detaching every attach of the exited mm")
    rec = world.monitor.recorder.record_of(sub) if sub is not None else None  # None: interval_only, no list sub
    if rec is not None and (not is_freed(sub) or rec.frees != 1):
        pytest.fail(f"{sub!r}: freed={is_freed(sub)}, free_notifier ran {rec.frees} time(s); expected freed exactly "
                    f"once", pytrace=False)
    if not mm.freed:
        pytest.fail(f"mm {mm.id} was not freed after exit, every detach and synchronize: mm_count="
                    f"{mm.mm_count.value} (a registration pin was never dropped)", pytrace=False)


def test_exit_coherence(mmu_world: World) -> None:
    """After exit the device holds no translation of the mm, and accesses through old attaches map nothing.

    With a release callback this must hold as soon as exit returned; without
    one the driver cannot know of the exit, so it must hold once every attach
    on the mm was detached.
    """
    world = mmu_world
    require(world, contract.DEVICE_TRANSLATIONS, "the device keeps no translations the kit could inspect")
    mm, attached, span = _attached(world)
    mm.exit()
    has_release = contract.RELEASE in world.caps
    if has_release:
        found = invariants.check_exit_coherence(mm, world.translations(mm), world.name)
        if found:
            pytest.fail("right after exit (release must drop every translation):\n"
                        + invariants.format_violations(found), pytrace=False)
    if has_release:  # a driver without release cannot know of the exit before its attaches go
        for handle in attached:
            for addr in range(*span, world.page):
                if world.access(handle, addr, tries=1, verify=False) is not None:
                    pytest.fail(f"after mm {mm.id} exited (and its release ran), a device access at {addr:#x} still "
                                f"returned a frame: a driver must map nothing of an exited mm", pytrace=False)
        if world.translations(mm):
            pytest.fail(f"after mm {mm.id} exited, device accesses created translations of it again", pytrace=False)
    for handle in attached:
        world.detach(handle)
    found = invariants.check_exit_coherence(mm, world.translations(mm), world.name)
    if found:
        pytest.fail("after exit and every detach:\n" + invariants.format_violations(found), pytrace=False)
    world.settle("after exit and every detach")
