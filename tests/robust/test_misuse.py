"""API misuse raises its typed error before changing anything (issue 16, item 7).

Each case builds a small machine, snapshots everything a misuse could touch
(frames in use, every mm's reference counts, mappings, page table and
subscriptions, the kernel's WARNs and bugs, the loaded drivers), makes the
misuse, and checks both the error type and that the snapshot is unchanged.
``unregister`` twice and ``unregister`` then ``put`` are covered by the core's
own registration tests (issue 12); the get/put cases here are the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from recording import RecordingDriver

import mmu_notifier as mn
from mmu_notifier import errors, log, sync
from mmu_notifier.mm import Prot


@dataclass
class Machine:
    kernel: mn.Kernel
    driver: RecordingDriver
    mm: mn.MM
    extra: dict[str, Any] = field(default_factory=dict)


def snapshot(machine: Machine) -> tuple[object, ...]:
    kernel, mm = machine.kernel, machine.mm
    container = mm.mmu_notifier_mm
    subs = [] if container is None else [(id(s), s.users, s.linked) for s in container.subscriptions]
    return (
        kernel.memory.in_use(),
        mm.mm_users.value,
        mm.mm_count.value,
        [(v.start, v.end) for v in mm.vmas],
        sorted(mm.page_table.entries),
        subs,
        list(kernel.warnings),
        list(kernel.bugs),
        kernel.drivers.names(),
        len(machine.driver.allocated),
    )


def machine() -> Machine:
    kernel = mn.Kernel(frames=256)
    driver = RecordingDriver()
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    start = mm.mmap(4 * mm.page_size)
    mm.fault(start, write=True)
    return Machine(kernel, driver, mm, {"start": start})


def _registered_twice(m: Machine) -> None:
    sub = m.extra["sub"] = mn.get(m.driver, m.mm)
    del sub
    mn.register(m.extra["sub"], m.mm, driver=m.driver)


CASES: dict[str, tuple[Callable[[Machine], object], type[Exception], Callable[[Machine], None] | None]] = {
    "get with a driver not loaded": (lambda m: mn.get(RecordingDriver(), m.mm), errors.MisuseError, None),
    "put of a never registered subscription": (lambda m: mn.put(mn.MMUNotifier()), errors.MisuseError, None),
    "register of a registered subscription": (
        lambda m: mn.register(m.extra["sub"], m.mm, driver=m.driver), errors.MisuseError,
        lambda m: m.extra.update(sub=mn.get(m.driver, m.mm)),
    ),
    "register_locked without the mmap lock": (
        lambda m: mn.notifier.register_locked(mn.MMUNotifier(), m.mm, driver=m.driver), errors.MisuseError, None,
    ),
    "get_locked without the mmap lock": (
        lambda m: mn.notifier.get_locked(m.driver, m.mm), errors.MisuseError, None,
    ),
    "ops of a driver never loaded": (lambda m: m.kernel.drivers.ops_of("nosuch"), errors.MisuseError, None),
    "a second driver of the same name": (lambda m: m.kernel.drivers.add(RecordingDriver()), errors.PluginError, None),
    "munmap of an unaligned address": (lambda m: m.mm.munmap(m.extra["start"] + 1, 4096), errors.InvalidArgumentError,
                                       None),
    "munmap of zero bytes": (lambda m: m.mm.munmap(m.extra["start"], 0), errors.InvalidArgumentError, None),
    "mmap of a negative length": (lambda m: m.mm.mmap(-4096), errors.InvalidArgumentError, None),
    "mremap to zero bytes": (lambda m: m.mm.mremap(m.extra["start"], 4096, 0), errors.InvalidArgumentError, None),
    "mprotect of an unmapped range": (lambda m: m.mm.mprotect(0x7000_0000, 4096, Prot.READ), errors.NoMemoryError,
                                      None),
    "madvise of an unmapped range": (lambda m: m.mm.madvise_dontneed(0x7000_0000, 4096), errors.NoMemoryError, None),
    "fault at an unmapped address": (lambda m: m.mm.fault(0x10, write=False), errors.BadAddressError, None),
    "unlock of a mutex not held": (lambda m: sync.Mutex("m").unlock(), errors.LockingError, None),
    "unlock of a spinlock not held": (lambda m: sync.SpinLock("s").unlock(), errors.LockingError, None),
    "srcu read_unlock of a section never entered": (lambda m: m.kernel.srcu.read_unlock(5), errors.LockingError,
                                                    None),
    "kfree twice": (
        lambda m: mn.kmem.kfree(m.extra["object"]), errors.DoubleFreeError,
        lambda m: (m.extra.update(object=mn.MMUNotifier()), mn.kmem.kfree(m.extra["object"])),
    ),
    "Kernel with a page size not a power of two": (lambda m: mn.Kernel(page_size=3000), errors.ParameterError, None),
    "Kernel with no memory": (lambda m: mn.Kernel(frames=0), errors.ParameterError, None),
    "an unknown log format": (lambda m: log.configure("xml"), errors.ParameterError, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_misuse_raises_its_typed_error_and_changes_nothing(case: str) -> None:
    misuse, error, prepare = CASES[case]
    m = machine()
    if prepare is not None:
        prepare(m)
    before = snapshot(m)
    with pytest.raises(error):
        misuse(m)
    assert snapshot(m) == before


def test_put_of_a_freed_subscription_is_a_use_after_free_and_changes_nothing() -> None:
    m = machine()
    sub = mn.get(m.driver, m.mm)
    mn.put(sub)
    mn.synchronize(m.kernel)
    before = snapshot(m)
    with pytest.raises(errors.UseAfterFreeError):
        mn.put(sub)
    assert snapshot(m) == before


def test_exited_mm_refuses_every_use_and_changes_nothing() -> None:
    m = machine()
    m.mm.exit()
    before = snapshot(m)
    for misuse in (m.mm.exit, m.mm.mmput, lambda: m.mm.mmap(4096), lambda: mn.get(m.driver, m.mm)):
        with pytest.raises(errors.MisuseError):
            misuse()
        assert snapshot(m) == before


def test_synchronize_inside_a_read_section_is_a_deadlock_error() -> None:
    m = machine()
    index = m.kernel.srcu.read_lock()
    before = snapshot(m)
    with pytest.raises(errors.DeadlockError):
        mn.synchronize(m.kernel)
    assert snapshot(m) == before
    m.kernel.srcu.read_unlock(index)


def test_parameter_error_is_still_a_value_error() -> None:
    with pytest.raises(ValueError, match="power of two"):
        mn.Kernel(page_size=3)
