"""The workqueues amdkfd queues its process works on: ``kfd_process_wq``, ``kfd_restore_wq`` and ``system_wq``.

Built on the core's work queues (:mod:`mmu_notifier.workqueue`), which model
``kernel/workqueue.c``: ``queue_work`` (at most once while pending),
``cancel_delayed_work_sync``, ``flush_delayed_work`` and ``flush_workqueue``.
The model has no timers: a delayed work is queued at once.

Each of the driver's queues keeps one worker at a time (``max_active=1``), as
the driver model did before the core had work queues, so the interleavings the
explorer visits (and every scenario outcome) stay what they were. In the kernel
only ``kfd_restore_wq`` is ordered; ``kfd_process_wq`` and ``system_wq`` may run
items concurrently, which no amdkfd race of the series depends on.
"""

from __future__ import annotations

from collections.abc import Callable

from mmu_notifier import workqueue as core

__all__ = ["Work", "Workqueue"]


def Work(name: str, fn: Callable[[], None]) -> core.Work:
    """A (delayed) work item running ``fn``, named ``name`` (``INIT_WORK`` / ``INIT_DELAYED_WORK``)."""
    return core.Work(fn, name=name)


class Workqueue(core.Workqueue):
    """One of the driver's workqueues: the core's, with one worker and the driver's call names."""

    def __init__(self, name: str, on_error: Callable[[BaseException], None]) -> None:
        super().__init__(name, max_active=1, on_error=on_error)

    def cancel_work_sync(self, work: core.Work) -> bool:
        """``cancel_delayed_work_sync``: dequeue ``work`` and wait for a running instance; True if it was pending."""
        return core.cancel_work_sync(work)

    def flush_work(self, work: core.Work) -> None:
        """``flush_delayed_work``: wait until ``work`` is neither pending nor running."""
        core.flush_work(work)
