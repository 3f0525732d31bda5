"""The 5.3 kfd_process, before patches 09 and 10: the use-after-free race the series fixed.

``create_process`` of 5.3 registered the notifier early, published the
process, and only then ran the steps that can fail (queue manager, apertures,
the CWSR ``vm_mmap``). Its error path unhashed the process, waited for the
wrong RCU flavour (table readers use ``kfd_processes_srcu``), unlinked the
notifier with ``mmu_notifier_unregister_no_release`` (which does not wait for
notifier walkers) and ``kfree`` d the process with the notifier embedded in
it. A walker on another CPU that had already loaded the notifier then reads
freed memory (``drivers.md`` section 5, "The race fixed by patch 09"):

1. thread A (open of /dev/kfd) finishes ``mmu_notifier_register``;
2. thread B (munmap, reclaim, aging) walks the mm's notifiers and holds kfd's;
3. a later init step of A fails;
4. A unlinks with ``unregister_no_release`` and returns at once;
5. A frees the process;
6. B reads the freed notifier's ``ops``: use after free.

Also faithful to 5.3: the error path never drops the lead-thread reference it
took (a leak), and ``release`` ends with ``unregister_no_release`` plus
``mmu_notifier_call_srcu`` of ``kfd_process_destroy_delayed`` (which drops
the kref), the pair patch 10 calls identical to ``put`` + ``free_notifier``.
"""

from __future__ import annotations

from mmu_notifier import MM, legacy, register
from mmu_notifier_amdkfd.kfd_process import KfdProcess, mark
from mmu_notifier_amdkfd.lifetime import Kfd, Scheme54, Unwind


class Scheme53(Scheme54):
    """Linux 5.3 (``scheme = "5.3"``): registration first, hand-written unwind after it, release with ``call_srcu``."""

    name = "5.3"

    def create_process(self, kfd: Kfd, mm: MM) -> KfdProcess:
        """5.3 ``create_process``, CWSR set-up included; every failure after registration unwinds by hand."""
        process = KfdProcess(kfd, mm)
        with Unwind() as unwind:
            unwind.push(lambda: kfd.free_process(process))
            process.alloc_pasid()
            unwind.push(process.free_pasid)
            process.alloc_doorbells()
            unwind.push(process.free_doorbells)
            register(process.mmu_notifier, mm, driver=kfd.ops)
            unwind.push(lambda: self._unpublish(kfd, process, mm))
            kfd.table.add(process)
            kfd.get_task_struct(process)  # the error path below never puts it
            process.pqm_init()
            unwind.push(process.pqm_uninit)
            process.init_apertures()
            unwind.push(process.destroy_pdds)
            process.init_cwsr_apu()
        return process

    @staticmethod
    def _unpublish(kfd: Kfd, process: KfdProcess, mm: MM) -> None:
        """``err_process_pqm_init`` of 5.3: unhash, ``synchronize_rcu``, ``unregister_no_release``; no SRCU wait."""
        kfd.table.remove(process)
        kfd.rcu.synchronize()  # plain RCU: waits for no reader of the table or of the notifier list
        mark("unregister_no_release", process)
        legacy.unregister_no_release(process.mmu_notifier, mm)

    def after_create(self, kfd: Kfd, process: KfdProcess) -> None:
        """Nothing: 5.3 set up CWSR inside ``create_process``."""

    def release_done(self, kfd: Kfd, process: KfdProcess, mm: MM) -> None:
        """The end of 5.3 ``release``: unlink now, drop the kref after a notifier grace period."""
        legacy.unregister_no_release(process.mmu_notifier, mm)
        legacy.call_srcu(kfd.kernel, lambda: kfd.unref_process(process))
