"""Registration and lifetime: one subscription per (driver, mm), alloc/free paired, grace period, no leak.

Models invariants 1 to 4, 6 and 12 of the reference's section 7 as a driver
sees them through its own user-facing path.
"""

from __future__ import annotations

import pytest

from mmu_notifier import exerciser as contract
from mmu_notifier import invariants, synchronize
from mmu_notifier.conformance.harness import World
from mmu_notifier.conformance.plugin import refuse
from mmu_notifier.invariants import InvariantViolation
from mmu_notifier.kmem import is_freed

#: why the list-subscription checks do not apply to a driver on interval notifiers only
_NO_LIST = ("the driver registers no list notifier (5.5 interval notifiers only), so there is no subscription, users "
            "count or free_notifier to check; check_interval's checks cover its interval subscriptions")


def _fail(found: list[InvariantViolation], context: str) -> None:
    if found:
        pytest.fail(f"{context}:\n{invariants.format_violations(found)}", pytrace=False)


def test_one_subscription_per_mm(mmu_world: World) -> None:
    """Every attach on one mm shares one subscription; another mm gets another; users counts the attaches."""
    world = mmu_world
    refuse(world, contract.INTERVAL_ONLY, _NO_LIST)
    by_exit = contract.DETACH_BY_EXIT in world.caps
    mm1, mm2 = world.new_mm(), world.new_mm()
    first = [world.attach(mm1) for _ in range(3)]
    second = [world.attach(mm2) for _ in range(2)]
    world.check("after 3 attaches on one mm and 2 on another", only=[invariants.REGISTRATION])
    if first[0].subscription is second[0].subscription:
        pytest.fail(f"attaches on mm {mm1.id} and mm {mm2.id} share {first[0].subscription!r}: one subscription "
                    f"per (driver, mm), not per driver", pytrace=False)
    if not by_exit:
        world.detach(first.pop())
        world.check("after detaching one of three attaches", only=[invariants.REGISTRATION])
        sub = first[0].subscription
        assert sub is not None  # interval_only drivers were skipped above
        if sub.users != 2:
            pytest.fail(f"after one of three detaches the subscription has users={sub.users}, expected 2",
                        pytrace=False)
    for handle in first + second:
        world.detach(handle)
    world.check("after every detach", only=[invariants.REGISTRATION])


def test_fresh_subscription_after_last_detach(mmu_world: World) -> None:
    """The last detach unlinks at once; the next attach allocates anew, even while the old free is pending (inv. 4)."""
    world = mmu_world
    refuse(world, contract.INTERVAL_ONLY, _NO_LIST)
    refuse(world, contract.DETACH_BY_EXIT, "its reference is dropped by mm exit, so no detach is ever the last")
    mm = world.new_mm()
    old = world.attach(mm)
    old_sub = old.subscription
    srcu = world.kernel.srcu
    index = srcu.read_lock()  # keep the old free pending
    try:
        world.detach(old)
        container = mm.mmu_notifier_mm
        still = container.find(world.ops) if container is not None else None
        if still is not None:
            pytest.fail(f"after the last detach the driver is still linked on mm {mm.id}: {still!r}", pytrace=False)
        new = world.attach(mm)
        if new.subscription is old_sub:
            pytest.fail("the attach after the last detach got the old subscription back; get must allocate a "
                        "fresh one once the last put unlinked the old", pytrace=False)
    finally:
        srcu.read_unlock(index)
    world.detach(new)
    world.settle("after both subscriptions' last detach")
    if not (is_freed(old_sub) and is_freed(new.subscription)):
        pytest.fail("a subscription was not freed after its last detach and synchronize", pytrace=False)


def test_alloc_free_paired(mmu_world: World) -> None:
    """Every subscription alloc_notifier made is freed exactly once, by free_notifier, by synchronize (inv. 2, 12)."""
    world = mmu_world
    refuse(world, contract.INTERVAL_ONLY, _NO_LIST)
    by_exit = contract.DETACH_BY_EXIT in world.caps
    recorder = world.monitor.recorder
    mms = [world.new_mm() for _ in range(2)]
    subs = []
    for _round in range(2):
        handles = [world.attach(mm) for mm in mms for _ in range(2)]
        subs += list({id(h.subscription): h.subscription for h in handles if h.subscription is not None}.values())
        for handle in handles:
            start, end = world.region(handle.mm, 2, handle=handle)
            world.touch(handle, start, end)
        for handle in handles:
            world.detach(handle)
        if by_exit:
            for mm in mms:
                mm.exit()
            mms = [world.new_mm() for _ in range(2)]
        world.settle("after every detach and synchronize")
    problems = []
    for sub in subs:
        rec = recorder.record_of(sub)
        if not is_freed(sub):
            problems.append(f"{sub!r} was never freed")
        elif rec.frees != 1:
            problems.append(f"{sub!r} reached free_notifier {rec.frees} times, expected exactly once")
    if problems:
        pytest.fail("alloc/free not paired:\n" + "\n".join(problems), pytrace=False)


def test_free_after_grace_period(mmu_world: World) -> None:
    """The last detach's free waits for the SRCU readers present then; synchronize waits for the free (inv. 3, 12)."""
    world = mmu_world
    refuse(world, contract.INTERVAL_ONLY, _NO_LIST)
    refuse(world, contract.DETACH_BY_EXIT, "its reference is dropped inside mm teardown, which itself waits for a "
                                           "grace period; the exit races cover it")
    mm = world.new_mm()
    handle = world.attach(mm)
    start, end = world.region(mm, 2, handle=handle)
    world.touch(handle, start, end)
    sub = handle.subscription
    srcu = world.kernel.srcu
    index = srcu.read_lock()  # a walker that may still hold the subscription
    try:
        world.detach(handle)
        if is_freed(sub):
            pytest.fail(f"{sub!r} was freed while an SRCU reader that started before the last detach was still "
                        f"inside its read section: freed without a grace period (did the driver free it itself?)",
                        pytrace=False)
    finally:
        srcu.read_unlock(index)
    synchronize(world.kernel)
    if not is_freed(sub):
        pytest.fail(f"{sub!r} was not freed by synchronize after its last detach", pytrace=False)
    world.check("after synchronize", settled=True)


def test_no_leak(mmu_world: World) -> None:
    """After every detach and synchronize: nothing allocated, no translation, mm refcounts back; exit frees the mm."""
    world = mmu_world
    by_exit = contract.DETACH_BY_EXIT in world.caps
    mms = [world.new_mm() for _ in range(2)]
    for mm in mms:
        handles = [world.attach(mm) for _ in range(2)]
        for handle in handles:
            start, end = world.region(mm, 3, handle=handle)
            world.touch(handle, start, end, write=True)
        mm.reclaim(start)
        world.touch(handles[-1], start, end)
        for handle in handles:
            world.detach(handle)
    world.settle("after every attach was detached")
    for mm in mms:
        mm.exit()
    world.settle("after every mm exited")
    if by_exit:
        return
    world.exerciser.unload()
    world.settle("after the module unload")
