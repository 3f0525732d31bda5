"""``kfd_processes_table``: the global hash of kfd processes by mm (``kfd_process.c``).

32 buckets hashed by the mm pointer; writers hold ``kfd_processes_mutex``,
readers sit in read sections of the table's own SRCU domain
``kfd_processes_srcu``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmu_notifier import MM, sync
from mmu_notifier.errors import MisuseError
from mmu_notifier.srcu import Srcu

if TYPE_CHECKING:
    from mmu_notifier_amdkfd.kfd_process import KfdProcess

#: ``KFD_PROCESS_TABLE_SIZE`` is ``1 << 5`` buckets.
PROCESS_TABLE_BITS = 5
#: ``GOLDEN_RATIO_32`` of ``hash_32``, which ``hash_min`` uses for the table's bucket.
_GOLDEN_RATIO_32 = 0x61C88647


class ProcessTable:
    """``kfd_processes_table``: processes hashed by their mm.

    Writers (insert, delete) hold ``mutex`` (``kfd_processes_mutex``); readers
    run inside a read section of ``srcu`` (``kfd_processes_srcu``) and may use
    what they found until they leave it. A bucket is a tuple replaced under the
    mutex, so a reader sees a consistent snapshot, as an RCU hlist walker does.
    """

    def __init__(self) -> None:
        self.mutex = sync.Mutex("kfd_processes_mutex")
        self.srcu = Srcu("kfd_processes_srcu")
        self._buckets: list[tuple[KfdProcess, ...]] = [()] * (1 << PROCESS_TABLE_BITS)

    @staticmethod
    def bucket(mm: MM) -> int:
        """``hash_min(mm, 5)``: the bucket of ``mm`` (its id stands for the pointer)."""
        return ((mm.id * _GOLDEN_RATIO_32) & 0xFFFFFFFF) >> (32 - PROCESS_TABLE_BITS)

    def _assert_writer(self) -> None:
        if not self.mutex.held_by_current():
            raise MisuseError("kfd_processes_table changed without kfd_processes_mutex (lockdep_assert_held)")

    def add(self, process: KfdProcess) -> None:
        """``hash_add_rcu``; the caller holds the mutex."""
        self._assert_writer()
        index = self.bucket(process.mm_key)
        self._buckets[index] = (process, *self._buckets[index])
        process.hashed = True

    def remove(self, process: KfdProcess) -> None:
        """``hash_del_rcu``; the caller holds the mutex. Removing an unhashed process changes nothing."""
        self._assert_writer()
        if not process.hashed:
            return
        index = self.bucket(process.mm_key)
        self._buckets[index] = tuple(p for p in self._buckets[index] if p is not process)
        process.hashed = False

    def find(self, mm: MM) -> KfdProcess | None:
        """``find_process_by_mm``; the caller is in a read section of ``srcu`` (or holds the mutex)."""
        for process in self._buckets[self.bucket(mm)]:
            if process.mm is mm:
                return process
        return None

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets)
