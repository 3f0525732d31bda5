"""The 5.3 struct hmm (``scheme = "legacy"``): kref, back pointer, temporary references, deferred free."""

from __future__ import annotations

import pytest

import mmu_notifier as mn
from mmu_notifier_hmm import DeviceMirror, HmmRange, LegacyHmm, mirror_unregister, range_register, range_unregister


@pytest.fixture
def legacy(make_world):
    """``legacy(fix=True)``: a world whose hmm driver runs the 5.3 scheme."""
    return lambda fix=True: make_world(scheme="legacy", legacy_srcu_fix=fix)


def test_mirrors_share_the_object_published_in_the_back_pointer(legacy, recording, register):
    _, driver, mm = legacy()
    first, second = recording(), recording()
    register(first, mm)
    register(second, mm)
    hmm = first.hmm
    assert isinstance(hmm, LegacyHmm) and second.hmm is hmm and driver.back_pointers == {mm: hmm}
    assert hmm.kref.value == 2 and hmm.users == 1  # registered once; the kref counts the mirrors
    assert mm.mm_count.value == 3  # the registration's pin and the struct hmm's own mmgrab


def test_ranges_hold_a_reference(legacy, recording, register, mapped):
    _, _, mm = legacy()
    base = mapped(mm, 1)
    mirror = recording()
    register(mirror, mm)
    rng = HmmRange(base, base + mm.page_size)
    range_register(rng, mirror)
    assert mirror.hmm.kref.value == 2
    range_unregister(rng)
    assert mirror.hmm.kref.value == 1


def test_fixed_free_waits_for_a_grace_period(legacy, recording, register):
    kernel, driver, mm = legacy(fix=True)
    mirror = recording()
    register(mirror, mm)
    hmm = mirror.hmm
    with kernel.srcu.read_section():  # a walker that may still hold the subscription
        mirror_unregister(mirror)
        assert not driver.back_pointers and hmm.kref.value == 0  # unpublished, not yet freed
        rng = mn.Range(mm, 0, mm.page_size, mn.Event.CLEAR, flags=mn.range.RANGE_BLOCKABLE)
        assert driver.invalidate_range_start(hmm, rng) == 0  # kref_get_unless_zero fails: bail out
        assert hmm.notifiers == 0
        driver.invalidate_range_end(hmm, rng)
        driver.release(hmm, mm)
        assert mirror.released == 0
    mn.synchronize(kernel)
    with pytest.raises(mn.UseAfterFreeError, match="LegacyHmm"):
        _ = hmm.kref
    assert mm.mm_count.value == 1 and not kernel.warnings and not kernel.bugs


def test_unfixed_free_is_immediate_even_inside_a_read_section(legacy, recording, register):
    kernel, driver, mm = legacy(fix=False)
    mirror = recording()
    register(mirror, mm)
    hmm = mirror.hmm
    with kernel.srcu.read_section():
        mirror_unregister(mirror)
        with pytest.raises(mn.UseAfterFreeError, match="hmm_free"):
            _ = hmm.kref
    assert not driver.back_pointers and mm.mm_count.value == 1


def test_a_dying_object_is_replaced_by_a_new_one(legacy, recording, register):
    kernel, _, mm = legacy(fix=True)
    mirror = recording()
    register(mirror, mm)
    old = mirror.hmm
    with kernel.srcu.read_section():  # keeps the old object's free pending
        mirror_unregister(mirror)
        register(mirror, mm)
        assert mirror.hmm is not old and mirror.hmm.kref.value == 1 and old.kref.value == 0
    mirror_unregister(mirror)
    mn.synchronize(kernel)
    assert mm.mm_count.value == 1 and not kernel.warnings


def test_callbacks_run_under_a_temporary_reference(legacy, recording, register, mapped):
    kernel, _, mm = legacy()
    base = mapped(mm, 1)
    mirror = recording()
    register(mirror, mm)
    mm.reclaim(base)
    assert len(mirror.synced) == 1 and mirror.hmm.kref.value == 1 and mirror.hmm.notifiers == 0
    mm.exit()
    assert mirror.released == 1 and mirror.hmm.kref.value == 1
    mirror_unregister(mirror)
    mn.synchronize(kernel)
    assert mm.freed and not kernel.warnings and not kernel.bugs


def test_the_legacy_object_is_never_allocated_through_get(legacy):
    _, driver, mm = legacy()
    with pytest.raises(mn.MisuseError, match="hmm_get_or_create"):
        mn.get(driver, mm)
    assert mm.mmu_notifier_mm is None or not mm.mmu_notifier_mm.subscriptions


def test_the_device_mirror_works_on_the_legacy_scheme(legacy, mapped):
    kernel, driver, mm = legacy()
    base = mapped(mm, 1)
    device = DeviceMirror(mm, driver.config)
    device.bind()
    frame = device.access(base)
    assert frame == mm.page_table.lookup(base >> mm.page_shift).pfn
    mm.reclaim(base)
    assert device.translations() == {}
    device.unbind()
    mn.synchronize(kernel)
    assert mm.mm_count.value == 1 and not driver.back_pointers and not kernel.warnings
