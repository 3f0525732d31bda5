"""Invalidation start/end of struct hmm: counting, mirror sync, legal and illegal refusals."""

from __future__ import annotations

import errno

import pytest

import mmu_notifier as mn
from mmu_notifier.notifier import invalidate_range_end, invalidate_range_start, invalidate_range_start_nonblock
from mmu_notifier_hmm import HmmRange, range_register, range_valid

EAGAIN = -errno.EAGAIN


def test_blockable_invalidation_syncs_every_mirror_between_count_and_uncount(world, recording, register, mapped):
    _, _, mm = world
    base = mapped(mm, 2)
    mirrors = [recording(), recording()]
    for mirror in mirrors:
        register(mirror, mm)
    hmm = mirrors[0].hmm
    mm.madvise_dontneed(base, mm.page_size)
    for mirror in mirrors:
        (seen,) = mirror.synced
        assert (seen.start, seen.end, seen.event, seen.blockable) == (base, base + mm.page_size, mn.Event.CLEAR, True)
    assert hmm.notifiers == 0


def test_start_counts_and_end_uncounts(world, recording, register):
    _, _, mm = world
    mirror = recording()
    register(mirror, mm)
    hmm = mirror.hmm
    ranges = [mn.Range(mm, 0, mm.page_size, mn.Event.CLEAR) for _ in range(3)]
    for i, rng in enumerate(ranges, 1):
        invalidate_range_start(rng)
        assert hmm.notifiers == i
    for i, rng in enumerate(ranges, 1):
        invalidate_range_end(rng)
        assert hmm.notifiers == 3 - i


def test_refused_nonblockable_start_undoes_its_count(world, recording, register, mapped):
    kernel, _, mm = world
    base = mapped(mm, 1)
    mirror = recording(answer=EAGAIN)
    register(mirror, mm)
    rng = HmmRange(base, base + mm.page_size)
    range_register(rng, mirror)
    assert mm.oom_reap() is False  # the VMA was skipped
    hmm = mirror.hmm
    assert hmm.notifiers == 0 and range_valid(rng)
    assert [r.blockable for r in mirror.synced] == [False]
    assert mm.page_table.lookup(base >> mm.page_shift) is not None and not kernel.warnings


def test_refusal_stops_at_the_refusing_mirror(world, recording, register):
    _, _, mm = world
    later, refusing, earlier = recording(), recording(answer=EAGAIN), recording()
    for mirror in (later, refusing, earlier):
        register(mirror, mm)  # list order is newest first: earlier, refusing, later
    rng = mn.Range(mm, 0, mm.page_size, mn.Event.UNMAP)
    assert invalidate_range_start_nonblock(rng) == EAGAIN
    assert (len(earlier.synced), len(refusing.synced), len(later.synced)) == (1, 1, 0)
    assert refusing.hmm.notifiers == 0


def test_contended_mirrors_sem_refuses_nonblockable_without_calling_mirrors(world, recording, register):
    kernel, _, mm = world
    mirror = recording()
    register(mirror, mm)
    hmm = mirror.hmm
    hmm.mirrors_sem.down_write()  # a mirror (un)registration in progress
    try:
        rng = mn.Range(mm, 0, mm.page_size, mn.Event.UNMAP)
        assert invalidate_range_start_nonblock(rng) == EAGAIN
    finally:
        hmm.mirrors_sem.up_write()
    assert mirror.synced == [] and hmm.notifiers == 0 and not kernel.warnings


@pytest.mark.parametrize(
    ("blockable", "answer"),
    [(True, EAGAIN), (True, -errno.EINVAL), (False, -errno.EINVAL)],
    ids=["blockable-eagain", "blockable-einval", "nonblockable-einval"],
)
def test_illegal_mirror_refusal_is_warned_and_ignored(world, recording, register, blockable, answer):
    kernel, _, mm = world
    mirror = recording(answer=answer, blockable_answer=answer)
    after = recording()
    register(after, mm)
    register(mirror, mm)  # called first
    rng = mn.Range(mm, 0, mm.page_size, mn.Event.CLEAR)
    if blockable:
        invalidate_range_start(rng)
    else:
        assert invalidate_range_start_nonblock(rng) == 0
    assert len(after.synced) == 1  # the walk went on past the bad answer
    assert mirror.hmm.notifiers == 1  # the start stands: its end will come
    assert len(kernel.warnings) == 1 and "sync_cpu_device_pagetables returned" in kernel.warnings[0]
    invalidate_range_end(rng)
    assert mirror.hmm.notifiers == 0


def test_free_notifier_warns_about_leftovers(world, recording, register):
    kernel, driver, mm = world
    mirror = recording()
    register(mirror, mm)
    driver.free_notifier(mirror.hmm)  # as if the struct hmm were freed with a mirror on it
    assert kernel.warnings == ["hmm freed with 0 range(s) and 1 mirror(s) left"]
