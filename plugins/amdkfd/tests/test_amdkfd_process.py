"""kfd_process lifetime under the three schemes, sequentially (real-thread backend, one thread at a time)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mmu_notifier import MM, NoMemoryError, Prot, get
from mmu_notifier.errors import BusyError, InvalidArgumentError
from mmu_notifier_amdkfd.kfd_process import CWSR_PAGES
from mmu_notifier_amdkfd.lifetime import NoSuchProcessError

Machine = Any  # conftest.Machine
MakeMachine = Callable[..., Machine]
SCHEMES = ("5.4", "get", "legacy")


def _kfd_subscriptions(mm: MM) -> list[object]:
    container = mm.mmu_notifier_mm
    return [s for s in container.subscriptions if s.ops.name == "amdkfd"] if container else []


@pytest.mark.parametrize("scheme", SCHEMES)
def test_open_creates_one_registered_process_per_mm(machine: MakeMachine, scheme: str) -> None:
    m = machine(scheme=scheme, gpus=2)
    mm, _ = m.mm()
    process = m.kfd.kfd_create_process(mm)
    assert m.kfd.kfd_create_process(mm) is process  # a second open finds it
    assert _kfd_subscriptions(mm) == [process.mmu_notifier]
    assert process.mmu_notifier.users == 1
    assert m.kfd.pasids.in_use() == {process.pasid} and m.kfd.doorbell_slices.in_use() == {1}
    assert m.kfd.task_refs.value == 1 and len(m.kfd.table) == 1
    assert [pdd.dev.index for pdd in process.pdds] == [0, 1]
    for pdd in process.pdds:  # the CWSR trap handler, mapped into the process on every GPU
        vma = mm.find_vma(pdd.tba_addr)
        assert vma is not None and vma.prot == Prot.READ | Prot.EXEC and vma.shared
        assert vma.end - vma.start == CWSR_PAGES * mm.page_size
    m.teardown()
    m.assert_clean()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_exit_releases_and_the_last_kref_frees_everything(machine: MakeMachine, scheme: str) -> None:
    m = machine(scheme=scheme)
    mm, address = m.mm()
    process = m.kfd.kfd_create_process(mm)
    m.kfd.create_queue(mm, 0, address, address + 4096)
    mm.exit()
    # release ran: unhashed, queues gone, p->mm cleared, the notifier unlinked; the free waits for a grace period
    assert len(m.kfd.table) == 0 and process.mm is None and process.pdds[0].queues == []
    assert not process.mmu_notifier.linked
    m.kfd.module_exit()
    m.assert_clean()
    assert mm.freed  # the registration's mm_count pin went with the free


@pytest.mark.parametrize("scheme", ("5.4", "get"))
@pytest.mark.parametrize("step", ("pqm_init", "init_apertures"))
def test_5_4_failures_before_registration_unwind_by_hand(machine: MakeMachine, scheme: str, step: str) -> None:
    m = machine(scheme=scheme, faults={step: {"nth": 1}})
    mm, _ = m.mm()
    with pytest.raises(NoMemoryError, match=step):
        m.kfd.kfd_create_process(mm)
    assert _kfd_subscriptions(mm) == [] and len(m.kfd.table) == 0
    m.assert_clean()  # nothing published, nothing left: PASID, doorbells and the process are gone already
    assert m.kfd.kfd_create_process(mm).mmu_notifier.linked  # only the first call failed
    m.teardown()
    m.assert_clean()


def test_5_4_cwsr_failure_leaves_the_process_for_mm_teardown(machine: MakeMachine) -> None:
    m = machine(faults={"cwsr": {"nth": 1}})
    mm, _ = m.mm()
    with pytest.raises(NoMemoryError, match="cwsr"):
        m.kfd.kfd_create_process(mm)
    (subscription,) = _kfd_subscriptions(mm)
    process = m.kfd.find_process(mm)
    assert process is not None and subscription is process.mmu_notifier
    assert m.kfd.kfd_create_process(mm) is process  # the next open uses it, without CWSR
    assert m.kfd.faults.calls("cwsr") == 1 and process.pdds[0].tba_addr is None
    m.teardown()
    m.assert_clean()


def test_get_cwsr_failure_puts_the_process_at_once(machine: MakeMachine) -> None:
    m = machine(scheme="get", faults={"cwsr": {"nth": 1}})
    mm, _ = m.mm()
    with pytest.raises(NoMemoryError, match="cwsr"):
        m.kfd.kfd_create_process(mm)
    assert _kfd_subscriptions(mm) == [] and m.kfd.find_process(mm) is None
    m.kfd.module_exit()  # free_notifier drops the last kref, the release work frees everything
    m.assert_clean()
    fresh = m.kfd.kfd_create_process(mm)  # the next open creates a new process
    assert _kfd_subscriptions(mm) == [fresh.mmu_notifier]
    m.teardown()
    m.assert_clean()


def test_get_alloc_notifier_finds_only_a_hashed_process(machine: MakeMachine) -> None:
    m = machine(scheme="get")
    mm, _ = m.mm()
    with pytest.raises(NoSuchProcessError):
        get(m.driver, mm)
    assert _kfd_subscriptions(mm) == []
    process = m.kfd.kfd_create_process(mm)
    assert get(m.driver, mm) is process.mmu_notifier and process.mmu_notifier.users == 2


@pytest.mark.parametrize("step", ("pqm_init", "init_apertures", "cwsr"))
def test_legacy_failures_after_registration_unwind_and_leak_the_lead_thread(machine: MakeMachine, step: str) -> None:
    m = machine(scheme="legacy", faults={step: {"nth": 1}})
    mm, _ = m.mm()
    with pytest.raises(NoMemoryError, match=step):
        m.kfd.kfd_create_process(mm)
    assert _kfd_subscriptions(mm) == [] and len(m.kfd.table) == 0
    assert m.kfd.pasids.in_use() == frozenset() and m.kfd.doorbell_slices.in_use() == frozenset()
    assert m.kfd.live == set()  # kfree'd at once, no grace period
    assert m.kfd.leaks() == {"lead_threads": "1 lead_thread reference(s) never put"}  # the 5.3 error path's leak
    m.teardown()
    assert m.kernel.warnings == [] and m.kernel.bugs == [] and mm.freed


def test_pasids_and_doorbell_slices_are_bounded_and_come_back(machine: MakeMachine) -> None:
    m = machine(pasid_min=5, pasid_max=6, doorbell_slices=4)
    mms = [m.mm()[0] for _ in range(3)]
    first, second = (m.kfd.kfd_create_process(mm) for mm in mms[:2])
    assert {first.pasid, second.pasid} == {5, 6}
    with pytest.raises(NoMemoryError, match="PASID"):
        m.kfd.kfd_create_process(mms[2])
    mms[0].exit()
    m.kfd.module_exit()
    assert m.kfd.kfd_create_process(mms[2]).pasid == 5
    m.teardown()
    m.assert_clean()


def test_doorbell_slice_exhaustion_fails_open_and_frees_the_pasid(machine: MakeMachine) -> None:
    m = machine(doorbell_slices=2)  # slice 0 is reserved: one process at a time
    mm1, mm2 = m.mm()[0], m.mm()[0]
    m.kfd.kfd_create_process(mm1)
    with pytest.raises(NoMemoryError, match="doorbell"):
        m.kfd.kfd_create_process(mm2)
    assert len(m.kfd.pasids.in_use()) == 1
    m.teardown()
    m.assert_clean()


def test_queue_creation_needs_a_process_and_respects_the_limits(machine: MakeMachine) -> None:
    m = machine(queues_per_process=3, doorbells_per_process=2, gpus=2)
    mm, address = m.mm()
    with pytest.raises(InvalidArgumentError, match="open /dev/kfd"):
        m.kfd.create_queue(mm, 0, address, address + 4096)
    process = m.kfd.kfd_create_process(mm)
    with pytest.raises(InvalidArgumentError, match="GPU 2"):
        m.kfd.create_queue(mm, 2, address, address + 4096)
    queues = [m.kfd.create_queue(mm, 0, address, address + 4096) for _ in range(2)]
    with pytest.raises(BusyError, match="doorbells"):
        m.kfd.create_queue(mm, 0, address, address + 4096)
    assert process.pqm is not None and process.pqm.in_use() == {q.queue_id for q in queues}
    m.kfd.create_queue(mm, 1, address, address + 4096)
    with pytest.raises(NoMemoryError, match="queue slots"):
        m.kfd.create_queue(mm, 1, address, address + 4096)
    m.teardown()
    m.assert_clean()


def test_the_gpu_view_is_the_cpu_page_table_while_a_queue_runs(machine: MakeMachine) -> None:
    m = machine()
    mm, address = m.mm(pages=2)
    m.kfd.kfd_create_process(mm)
    assert m.kfd.device_access(mm, address) is None  # no queue: the GPU runs nothing
    m.kfd.create_queue(mm, 0, address, address + 4096)
    pfn = m.kfd.device_access(mm, address + 4096, write=True)
    vpn = (address + 4096) >> mm.page_shift
    assert pfn == mm.page_table.lookup(vpn).pfn
    assert m.kfd.translations(mm) == {vpn: pfn}
    new = mm.migrate(address + 4096)
    assert m.kfd.translations(mm) == {vpn: new}  # the IOMMU walks the CPU's tables
    mm.munmap(address, 2 * 4096)
    assert m.kfd.translations(mm) == {} and m.kfd.device_access(mm, address + 4096) is None
    mm.exit()
    assert m.kfd.translations(mm) == {} and m.kfd.device_access(mm, address) is None
    m.kfd.module_exit()
    m.assert_clean()


def test_eviction_stops_the_queues_until_the_restore_work_ran(machine: MakeMachine) -> None:
    from mmu_notifier import sync
    from mmu_notifier_amdkfd.workqueue import Work

    m = machine()
    mm, address = m.mm()
    process = m.kfd.kfd_create_process(mm)
    m.kfd.create_queue(mm, 0, address, address + 4096)
    hold = sync.Completion("hold-restore-wq")
    m.kfd.restore_wq.queue_work(Work("blocker", lambda: hold.wait()))  # keeps the restore work pending
    assert m.kfd.schedule_evict_and_restore_process(mm)
    m.kfd.system_wq.flush()
    assert process.pdds[0].evicted == 1 and m.kfd.device_access(mm, address) is None
    hold.complete()
    m.kfd.restore_wq.flush()
    assert process.pdds[0].evicted == 0 and m.kfd.device_access(mm, address) is not None
    assert not m.kfd.schedule_evict_and_restore_process(MM(m.kernel))  # no process for that mm
    m.teardown()
    m.assert_clean()


def test_release_cancels_a_pending_eviction(machine: MakeMachine) -> None:
    from mmu_notifier import sync
    from mmu_notifier_amdkfd.workqueue import Work

    m = machine()
    mm, _ = m.mm()
    process = m.kfd.kfd_create_process(mm)
    hold = sync.Completion("hold-system-wq")
    m.kfd.system_wq.queue_work(Work("blocker", lambda: hold.wait()))
    assert m.kfd.schedule_evict_and_restore_process(mm)
    assert process.eviction_work.pending
    mm.exit()  # release cancels it before the process can be freed
    assert not process.eviction_work.pending
    hold.complete()
    m.kfd.module_exit()
    m.assert_clean()  # the eviction work never ran on the freed process
