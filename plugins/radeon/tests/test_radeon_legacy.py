"""The 5.3 scheme: per-device hash, no refcount, release that only schedules the destroy work."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mmu_notifier import sync, synchronize
from mmu_notifier.errors import InterruptedCallError, NoMemoryError
from mmu_notifier.kmem import is_freed
from mmu_notifier_radeon.device import ANONONLY, REGISTER, VALIDATE
from mmu_notifier_radeon.legacy import LegacyRadeonMN

Machine = Any  # conftest.Machine
Make = Callable[..., Machine]
BOUND = ANONONLY | REGISTER | VALIDATE


def test_two_devices_of_one_process_register_two_notifiers(machine: Make) -> None:
    m = machine(scheme="5.3", devices=2)
    mm, a = m.process(4)
    bos = [m.userptr(rdev.open(mm), a, 1, BOUND)[1] for rdev in m.radeon.devices]
    first, second = bos[0].mn, bos[1].mn
    assert isinstance(first, LegacyRadeonMN) and isinstance(second, LegacyRadeonMN) and first is not second
    assert first.rdev is m.radeon.devices[0] and m.radeon.devices[0].mn_hash[mm] is first
    container = mm.mmu_notifier_mm
    assert container is not None and [s for s in container.subscriptions if s.linked] == [second, first]
    assert first.users == second.users == 1  # register sets users to 1; 5.3 never counts BOs
    with m.radeon.devices[0].mn_lock, m.radeon.devices[1].mn_lock:
        mm.exit()  # both destroy works wait until exit unlinked both notifiers
    m.finish()


def test_an_emptied_radeon_mn_stays_registered(machine: Make) -> None:
    m = machine(scheme="5.3")
    mm, a = m.process(4)
    file = m.rdev.open(mm)
    handle, bo = m.userptr(file, a, 2, BOUND)
    rmn = bo.mn
    assert rmn is not None
    m.rdev.gem_close(file, handle)
    assert rmn.nodes() == [] and rmn.linked and m.rdev.mn_hash[mm] is rmn, "no refcount: nothing unregisters it"
    m.rdev.close(file)
    m.radeon.radeon_exit()  # 5.3's radeon_exit has no mmu_notifier_synchronize and unregisters nothing
    assert rmn.linked
    with m.rdev.mn_lock:  # the destroy work waits until exit unlinked the notifier (kworker latency)
        mm.exit()  # release: the destroy work finally unregisters and frees it
    m.finish()
    assert is_freed(rmn) and mm.freed and not m.radeon.rmns


def test_release_only_schedules_the_destroy_work(machine: Make) -> None:
    m = machine(scheme="5.3")
    mm, a = m.process(4)
    file = m.rdev.open(mm)
    _, bo = m.userptr(file, a, 2, BOUND)
    rmn = bo.mn
    assert isinstance(rmn, LegacyRadeonMN)
    with m.rdev.mn_lock:  # the destroy work waits until exit unlinked the notifier (kworker latency)
        mm.exit()
    assert m.radeon.stats["release_scheduled"] == 1
    assert bo.bound and len(m.radeon.translations(mm)) == 2, "exit_mmap freed the pages with the BO still bound"
    m.kernel.system_wq.flush()
    assert is_freed(rmn) and bo.mn is None and bo.mn_node is None and mm not in m.rdev.mn_hash
    assert bo.bound, "the destroy work detaches the BOs but does not unbind them"
    m.rdev.close(file)  # exit_files: the guard skips the unregister; TTM unbinds
    assert not m.radeon.translations(mm)
    synchronize(m.kernel)
    assert mm.freed
    m.finish()


def test_unregister_takes_the_device_lock_then_the_radeon_mn_lock(machine: Make) -> None:
    m = machine(scheme="5.3")
    mm, a = m.process(4)
    file = m.rdev.open(mm)
    handle, bo = m.userptr(file, a, 2, BOUND)
    rmn = bo.mn
    assert rmn is not None
    seen: list[list[str]] = []

    class Recording(sync.Mutex):
        def lock(self) -> None:
            seen.append([getattr(held, "name", "?") for held in sync.current().held])
            super().lock()

    rmn.lock = Recording("radeon_mn.lock")
    m.rdev.gem_close(file, handle)
    assert seen == [["radeon0.mn_lock"]]
    with m.rdev.mn_lock:
        mm.exit()
    m.finish()


def test_killed_while_taking_the_mmap_lock_registers_nothing(machine: Make) -> None:
    m = machine(scheme="5.3")
    mm, a = m.process(2)
    file = m.rdev.open(mm)
    m.kernel.faults.inject("radeon.mmap_lock_killable", nth=1)
    with pytest.raises(InterruptedCallError):
        m.userptr(file, a, 1, BOUND)
    assert not file.handles and not m.rdev.bos and mm.mmu_notifier_mm is None and mm not in m.rdev.mn_hash
    _, bo = m.userptr(file, a, 1, BOUND)  # the next try works
    assert bo.mn is m.rdev.mn_hash[mm]
    with m.rdev.mn_lock:
        mm.exit()
    m.finish()


def test_failed_node_allocation_is_harmless_without_a_refcount(machine: Make) -> None:
    m = machine(scheme="5.3")
    mm, a = m.process(2)
    file = m.rdev.open(mm)
    m.kernel.faults.inject("radeon.node_alloc", nth=1)
    with pytest.raises(NoMemoryError):
        m.userptr(file, a, 1, BOUND)
    rmn = m.rdev.mn_hash[mm]
    assert rmn.nodes() == [] and rmn.users == 1 and not file.handles
    with m.rdev.mn_lock:
        mm.exit()
    m.finish()
    assert mm.freed and not m.radeon.rmns
