"""Invalidations: start/end pairing, non-blockable ranges, and coherence of the device's translations.

Every kind of CPU page-table change of the model runs against a device that
holds translations of the pages involved: munmap (UNMAP), madvise, reclaim,
migration, KSM and copy-on-write (CLEAR), mprotect (PROTECTION_VMA), fork's
write protection (PROTECTION_PAGE), clear_refs (SOFT_DIRTY), mremap, and the
OOM reaper's non-blockable unmap.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mmu_notifier import exerciser as contract
from mmu_notifier import invariants
from mmu_notifier.conformance.harness import World
from mmu_notifier.conformance.plugin import require
from mmu_notifier.errors import SleepInAtomicError
from mmu_notifier.exerciser import Handle
from mmu_notifier.mm import MM, Prot

#: pages per region; several regions per check so that each operation hits pages the device translates
PAGES = 4


def _setup(world: World, regions: int = 2) -> tuple[MM, Handle, list[tuple[int, int]]]:
    mm = world.new_mm()
    handle = world.attach(mm)
    spans = [world.region(mm, PAGES, handle=handle) for _ in range(regions)]
    for start, end in spans:
        world.touch(handle, start, end, write=True)
    return mm, handle, spans


def _operations(world: World, mm: MM, handle: Handle, span: tuple[int, int]) -> list[tuple[str, Callable[[], object]]]:
    """Each CPU operation that invalidates part of ``span`` (whose pages are mapped), by name."""
    start, end = span
    page = world.page
    other = world.new_mm()
    other_page = other.mmap(page)
    other.fault(other_page, write=True)

    def cow_break() -> None:
        child = mm.fork()
        mm.fault(start + page, write=True)  # the parent's write copies the shared frame (CLEAR + change_pte)
        child.exit()

    return [
        ("madvise(MADV_DONTNEED)", lambda: mm.madvise_dontneed(start, page)),
        ("reclaim", lambda: mm.reclaim(start + page)),
        ("migrate", lambda: mm.migrate(start + 2 * page)),
        ("KSM merge", lambda: mm.ksm_merge(start + 3 * page, other, other_page)),
        ("mprotect(PROT_READ)", lambda: mm.mprotect(start, end - start, Prot.READ)),
        ("mprotect(PROT_READ|PROT_WRITE)", lambda: mm.mprotect(start, end - start, Prot.READ | Prot.WRITE)),
        ("fork + copy-on-write", cow_break),
        ("clear_refs (soft dirty)", mm.clear_soft_dirty),
        ("mremap (move)", lambda: mm.mremap(start, end - start, 2 * (end - start))),
    ]


def test_start_end_pairing(mmu_world: World) -> None:
    """Every delivered start is ended; once all ended, the device can translate again (inv. 14)."""
    world = mmu_world
    mm, handle, (probe, victim, doomed) = _setup(world, regions=3)
    checks = [invariants.PAIRING, invariants.CALLBACKS, invariants.NONBLOCK, invariants.KERNEL]
    operations = _operations(world, mm, handle, victim)
    operations += [("munmap", lambda: mm.munmap(*_len(doomed))), ("OOM reaper", mm.oom_reap)]
    for name, operation in operations:
        world.touch(handle, *victim)
        operation()
        world.check(f"after {name}", only=checks)
        if contract.DEVICE_TRANSLATIONS not in world.caps:
            continue
        for addr in (probe[0], probe[0] + world.page):
            mm.fault(addr, write=True)
            if world.access(handle, addr, tries=3) is None:
                pytest.fail(
                    f"after {name}, with every invalidation ended, a device access at {addr:#x} (mapped by the CPU "
                    f"and by map_range) was still refused 3 times: the driver's invalidate_range_start left "
                    f"state that its invalidate_range_end did not undo (start and end are not paired in the "
                    f"driver)", pytrace=False)
    world.check("at the end", only=checks)


def _len(span: tuple[int, int]) -> tuple[int, int]:
    return span[0], span[1] - span[0]


def test_nonblockable_never_sleeps(mmu_world: World) -> None:
    """The OOM reaper's non-blockable ranges: callbacks complete or refuse (-EAGAIN), never sleep (inv. 15)."""
    world = mmu_world
    mm, handle, spans = _setup(world)
    bare_start, bare_end = world.region(mm, PAGES)  # a region the device was never told about
    for addr in range(bare_start, bare_end, world.page):
        mm.fault(addr, write=True)
    try:
        reaped = mm.oom_reap()
    except SleepInAtomicError as error:
        pytest.fail(f"a callback slept in the OOM reaper's non-blockable range: {error}\n"
                    f"(a non-blockable start must only trylock and return -EAGAIN when it would have to wait)",
                    pytrace=False)
    found = world.violations()
    if not reaped and contract.REFUSES_NONBLOCK not in world.caps:
        found.append(invariants.InvariantViolation(
            invariants.NONBLOCK,
            "the driver refused a non-blockable range but does not declare the capability refuses_nonblock",
        ))
    if found:
        pytest.fail("after the OOM reaper ran:\n" + invariants.format_violations(found), pytrace=False)
    if contract.DEVICE_TRANSLATIONS in world.caps:
        for start, _ in spans:  # the device works again afterwards
            mm.fault(start, write=True)
            world.access(handle, start)
        world.check("after device accesses following the OOM reaper")


def test_coherence(mmu_world: World) -> None:
    """After each kind of CPU change, no device translation names a frame the CPU does not map there."""
    world = mmu_world
    require(world, contract.DEVICE_TRANSLATIONS, "the device keeps no translations the kit could compare")
    mm, handle, spans = _setup(world, regions=3)
    operations = _operations(world, mm, handle, spans[0])
    operations += [
        ("munmap (part)", lambda: mm.munmap(spans[1][0] + world.page, 2 * world.page)),
        ("OOM reaper", mm.oom_reap),
        ("munmap (all)", lambda: mm.munmap(*_len(spans[2]))),
    ]
    for name, operation in operations:
        for start, end in spans:
            world.touch(handle, start, end)
        if not world.translations(mm):
            pytest.fail(f"before {name}: the device holds no translation although every page was accessed; the "
                        f"capability device_translations says access fills translations", pytrace=False)
        try:
            operation()
        except SleepInAtomicError as error:
            pytest.fail(f"{name}: a callback slept in a non-blockable range: {error}", pytrace=False)
        world.check(f"after {name}", only=[invariants.COHERENCE, invariants.CALLBACKS, invariants.KERNEL])
        # reused frames make a stale translation point at somebody else's page: show that too
        fresh = world.region(mm, 2)
        for addr in range(*fresh, world.page):
            mm.fault(addr, write=True)
        world.check(f"after {name} and fresh pages reusing the freed frames", only=[invariants.COHERENCE])
