"""The driver's building blocks: the id allocator, workqueues, the process table and kfree poisoning."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmu_notifier import MM, Kernel, sync
from mmu_notifier.errors import DoubleFreeError, MisuseError, UseAfterFreeError
from mmu_notifier.kmem import kfree
from mmu_notifier_amdkfd.device import Ida
from mmu_notifier_amdkfd.process_table import PROCESS_TABLE_BITS, ProcessTable
from mmu_notifier_amdkfd.workqueue import Work, Workqueue


@given(
    first=st.integers(0, 5),
    size=st.integers(1, 12),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 20)), max_size=60),
)
def test_ida_hands_out_the_lowest_free_id_and_takes_back_only_its_own(
    first: int, size: int, ops: list[tuple[bool, int]]
) -> None:
    ida = Ida("test", first, first + size - 1)
    used: set[int] = set()
    for allocate, pick in ops:
        if allocate:
            free = sorted(set(range(first, first + size)) - used)
            got = ida.alloc()
            assert got == (free[0] if free else None)
            if got is not None:
                used.add(got)
        else:
            victim = first + pick
            assert ida.free(victim) == (victim in used)
            used.discard(victim)
        assert ida.in_use() == used
    for id_ in list(used):
        assert ida.free(id_)
    assert ida.in_use() == frozenset()
    assert ida.alloc() == first


def _blocker(wq: Workqueue, name: str) -> tuple[Work, sync.Completion]:
    """A work that runs until its completion is signalled (so later works stay pending)."""
    release = sync.Completion(f"{name}-release")
    work = Work(name, lambda: release.wait())
    assert wq.queue_work(work)
    return work, release


def test_a_pending_work_is_queued_once_and_cancelled_without_running() -> None:
    errors: list[BaseException] = []
    wq = Workqueue("test_wq", errors.append)
    ran: list[str] = []
    _, release = _blocker(wq, "blocker")
    work = Work("victim", lambda: ran.append("victim"))
    assert wq.queue_work(work)
    assert not wq.queue_work(work)  # already pending
    assert wq.cancel_work_sync(work)
    release.complete()
    wq.flush()
    assert ran == [] and errors == []
    assert not wq.cancel_work_sync(work)  # neither pending nor running


def test_flush_work_waits_for_the_item_and_flush_for_the_queue() -> None:
    wq = Workqueue("test_wq", pytest.fail)
    ran: list[int] = []
    works = [Work(f"w{i}", lambda i=i: ran.append(i)) for i in range(5)]
    for work in works:
        wq.queue_work(work)
    wq.flush_work(works[2])
    assert ran[:3] == [0, 1, 2]
    wq.flush()
    assert ran == [0, 1, 2, 3, 4]


def test_an_exception_in_a_work_is_reported_and_the_worker_goes_on() -> None:
    errors: list[BaseException] = []
    wq = Workqueue("test_wq", errors.append)
    ran: list[str] = []
    wq.queue_work(Work("bad", lambda: [][0]))
    wq.queue_work(Work("good", lambda: ran.append("good")))
    wq.flush()
    assert [type(e) for e in errors] == [IndexError] and ran == ["good"]


class _Process:
    """Enough of a kfd_process for the table: its mm and whether it is hashed."""

    def __init__(self, mm: MM) -> None:
        self.mm: MM | None = mm
        self.mm_key = mm
        self.hashed = False


def test_the_table_finds_by_mm_and_only_writers_with_the_mutex_change_it() -> None:
    kernel = Kernel(frames=1)
    table = ProcessTable()
    mms = [MM(kernel) for _ in range(40)]
    processes = [_Process(mm) for mm in mms]
    with pytest.raises(MisuseError, match="kfd_processes_mutex"):
        table.add(processes[0])  # type: ignore[arg-type]
    with table.mutex:
        for process in processes:
            table.add(process)  # type: ignore[arg-type]
    assert all(0 <= table.bucket(mm) < 1 << PROCESS_TABLE_BITS for mm in mms)
    with table.srcu.read_section():
        assert all(table.find(mm) is process for mm, process in zip(mms, processes, strict=True))
    with table.mutex:
        table.remove(processes[3])  # type: ignore[arg-type]
        table.remove(processes[3])  # type: ignore[arg-type]  # hash_del twice is harmless
    assert table.find(mms[3]) is None and len(table) == 39
    processes[5].mm = None  # release cleared p->mm: a lookup by mm no longer matches
    assert table.find(mms[5]) is None


class _Thing:
    def __init__(self) -> None:
        self.field = 1


def test_kfree_poisons_the_object_and_names_the_free_site() -> None:
    thing = _Thing()
    kfree(thing)
    with pytest.raises(UseAfterFreeError, match="field touched after kfree") as info:
        _ = thing.field
    assert "test_kfree_poisons_the_object_and_names_the_free_site" in (info.value.free_site or "")
    with pytest.raises(DoubleFreeError):
        kfree(thing)
