"""The mirror API and the struct hmm life cycle of 5.4 (get/put)."""

from __future__ import annotations

import pytest

import mmu_notifier as mn
from mmu_notifier_hmm import Hmm, HmmRange, mirror_register, mirror_unregister, range_register


def test_two_mirrors_share_one_struct_hmm(world, recording, register):
    kernel, _, mm = world
    first, second = recording(), recording()
    register(first, mm)
    register(second, mm)
    assert isinstance(first.hmm, Hmm)
    assert first.hmm is second.hmm
    hmm = first.hmm
    assert hmm.users == 2 == len(hmm.mirrors)
    assert hmm.mirrors == [second, first]  # list_add: newest first
    assert mm.mmu_notifier_mm is not None and mm.mmu_notifier_mm.subscriptions == (hmm,)

    mirror_unregister(second)
    assert hmm.users == 1 and hmm.mirrors == [first] and second.hmm is None
    mirror_unregister(first)  # the last put: the free follows a grace period
    mn.synchronize(kernel)
    with pytest.raises(mn.UseAfterFreeError):
        _ = hmm.mirrors
    assert not kernel.warnings and not kernel.bugs


def test_struct_hmm_after_last_put_is_a_new_one(world, recording, register):
    kernel, _, mm = world
    mirror = recording()
    register(mirror, mm)
    old = mirror.hmm
    mirror_unregister(mirror)
    register(mirror, mm)  # the old object is unlinked, whether or not its free ran yet
    assert mirror.hmm is not old and mirror.hmm.users == 1
    mirror_unregister(mirror)
    mn.synchronize(kernel)
    assert mm.mm_count.value == 1 and not kernel.warnings


def test_register_needs_the_mmap_lock_for_write(world, recording):
    _, _, mm = world
    mirror = recording()
    with pytest.raises(mn.MisuseError, match="mmap lock"):
        mirror_register(mirror, mm)
    mm.mmap_lock.down_read()
    try:
        with pytest.raises(mn.MisuseError, match="mmap lock"):
            mirror_register(mirror, mm)
    finally:
        mm.mmap_lock.up_read()
    assert mirror.hmm is None and mm.mmu_notifier_mm is None


def test_register_twice_is_refused(world, recording, register):
    _, _, mm = world
    mirror = recording()
    register(mirror, mm)
    with pytest.raises(mn.MisuseError, match="already registered"):
        register(mirror, mm)
    assert mirror.hmm.users == 1


def test_get_errors_propagate_with_nothing_registered(recording, register):
    kernel = mn.Kernel(frames=64, users_limit=1)
    from mmu_notifier_hmm import HmmDriver

    kernel.drivers.add(HmmDriver())
    mm = mn.MM(kernel)
    first, second = recording(), recording()
    register(first, mm)
    with pytest.raises(mn.RefcountOverflowError):
        register(second, mm)
    assert second.hmm is None and first.hmm.mirrors == [first] and first.hmm.users == 1


def test_register_without_the_driver_loaded_is_misuse(recording, register):
    mm = mn.MM(mn.Kernel(frames=16))
    with pytest.raises(mn.MisuseError, match="not loaded"):
        register(recording(), mm)


def test_unregister_with_a_range_is_an_error(world, recording, register, mapped):
    _, _, mm = world
    base = mapped(mm, 1)
    mirror = recording()
    register(mirror, mm)
    hmm = mirror.hmm
    range_register(HmmRange(base, base + mm.page_size), mirror)
    with pytest.raises(mn.MisuseError, match="range"):
        mirror_unregister(mirror)
    assert mirror.hmm is hmm and hmm.mirrors == [mirror] and hmm.users == 1


def test_unregister_of_an_unregistered_mirror_is_misuse(recording):
    with pytest.raises(mn.MisuseError, match="not registered"):
        mirror_unregister(recording())


def test_release_reaches_every_mirror(world, recording, register):
    kernel, _, mm = world
    mirrors = [recording() for _ in range(3)]
    for mirror in mirrors:
        register(mirror, mm)
    hmm = mirrors[0].hmm
    mm.exit()
    assert [m.released for m in mirrors] == [1, 1, 1]
    assert not hmm.linked and hmm.users == 3  # teardown unlinks but leaves the references
    for mirror in mirrors:
        mirror_unregister(mirror)
    mn.synchronize(kernel)
    assert mm.freed and not kernel.warnings and not kernel.bugs


def test_release_may_not_unregister_the_mirror(world, register):
    from mmu_notifier_hmm import HmmMirror

    class Selfish(HmmMirror):
        def sync_cpu_device_pagetables(self, range: mn.Range) -> int:
            return 0

        def release(self) -> None:
            mirror_unregister(self)  # takes mirrors_sem for write under its read side

    _, _, mm = world
    register(Selfish(), mm)
    with pytest.raises(mn.DeadlockError, match="mirrors_sem"):
        mm.exit()
