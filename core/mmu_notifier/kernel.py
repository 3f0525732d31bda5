"""One modelled machine: the notifier SRCU domain, loaded drivers, physical memory.

The kernel has exactly one of each; the model lets a test or an exploration
build as many independent kernels as it likes, so runs never share state.
Functions that the kernel calls without an mm (``mmu_notifier_synchronize``)
take a kernel, defaulting to :func:`default_kernel`.
"""

from __future__ import annotations

import itertools

from mmu_notifier import workqueue
from mmu_notifier.errors import ParameterError
from mmu_notifier.faults import FaultInjector
from mmu_notifier.log import LOG
from mmu_notifier.pagetable import PhysicalMemory
from mmu_notifier.plugins import DriverRegistry
from mmu_notifier.srcu import Srcu
from mmu_notifier.workqueue import Workqueue

#: The upstream commit that :attr:`Kernel.end_after_failed_start` models.
END_AFTER_FAILED_START_COMMIT = (
    "c2655835fd8cabdfe7dab737253de3ffb88da126 mm/mmu_notifiers: ensure range_end() is paired with range_start()"
)
#: The first mainline release with it (checked against the 5.10 stable backport, which carries
#: Linus's sign-off on 29 March 2021, and the 5.10.13 tree, which lacks it).
END_AFTER_FAILED_START_SINCE = "5.12"

#: ``UINT_MAX``: the limit of ``struct mmu_notifier.users``.
UINT_MAX = (1 << 32) - 1


class Kernel:
    """The shared state of one modelled machine.

    ``users_limit`` is the get/put overflow limit (lower it to reach EOVERFLOW
    in a test). ``end_after_failed_start`` switches on the behaviour of later
    kernels: after a refused non-blockable start, every subscription with an
    end callback receives the end (and a driver that refused but has an end
    callback is WARNed about); 5.4 sends no end at all. That is commit
    c2655835fd8c "mm/mmu_notifiers: ensure range_end() is paired with
    range_start()" (:data:`END_AFTER_FAILED_START_COMMIT`), first released in
    v5.12 (merged in March 2021 during the 5.12-rc cycle) and backported to the
    stable 5.10 series (5.10.27) (:data:`END_AFTER_FAILED_START_SINCE`).

    Interval notifier (5.5) switches: ``interval_remove_unlocked_wait``
    restores 5.5's ``mmu_interval_notifier_remove``, which reads the sequence
    without the lock and may return while the last end still applies the
    deferred list (the 2022 fix is the default);
    ``interval_insert_checks_mm_users`` switches on the 2020 fix that refuses an
    interval insert on an exited mm (5.5 checks only ``mm_count``).

    ``warnings`` collects every WARN (the kernel prints and carries on);
    ``bugs`` collects exceptions raised by deferred callbacks (for example a
    ``free_notifier`` that slept). Checkers treat either being non-empty as a
    failure.
    """

    def __init__(
        self,
        *,
        frames: int = 1 << 20,
        users_limit: int = UINT_MAX,
        end_after_failed_start: bool = False,
        page_size: int = 4096,
        interval_remove_unlocked_wait: bool = False,
        interval_insert_checks_mm_users: bool = False,
    ) -> None:
        if page_size <= 0 or page_size & (page_size - 1):
            raise ParameterError(f"Kernel: page_size must be a power of two, got {page_size}")
        self.page_size = page_size
        self.interval_remove_unlocked_wait = interval_remove_unlocked_wait
        self.interval_insert_checks_mm_users = interval_insert_checks_mm_users
        self.users_limit = users_limit
        self.end_after_failed_start = end_after_failed_start
        self.memory = PhysicalMemory(frames)
        self.srcu = Srcu("mmu_notifier_srcu", on_error=self.record_bug)
        self.drivers = DriverRegistry(self)
        self._system_wq: Workqueue | None = None
        #: fault injection at named sites (:mod:`mmu_notifier.faults`)
        self.faults = FaultInjector()
        self.warnings: list[str] = []
        self.bugs: list[BaseException] = []
        self._mm_ids = itertools.count(1)

    @property
    def system_wq(self) -> Workqueue:
        """``system_wq``: where :func:`~mmu_notifier.workqueue.schedule_work` queues (made on first use)."""
        wq = self._system_wq
        if wq is None:
            wq = self._system_wq = Workqueue("events", on_error=self.record_bug)
        return wq

    def next_mm_id(self) -> int:
        """A fresh address-space number (for names and logs)."""
        return next(self._mm_ids)

    def warn(self, message: str) -> None:
        """Record a WARN and carry on, as the kernel does."""
        self.warnings.append(message)
        if LOG.on:
            LOG.event("kernel.warn", message=message)

    def record_bug(self, error: BaseException) -> None:
        """Record an exception raised where nobody can catch it (a deferred callback)."""
        self.bugs.append(error)


_default: Kernel | None = None


def default_kernel() -> Kernel:
    """The process-wide kernel used when none is named."""
    global _default
    if _default is None:
        _default = Kernel()
    return _default


workqueue.default_kernel_hook = default_kernel
