"""The ``rdma_odp`` driver plugin: RDMA on-demand paging (``drivers/infiniband/core/umem_odp.c``, mlx5's fault path).

Linux 5.4 after patches 06 and 07 of the get/put series: one
:class:`~mmu_notifier_rdma_odp.umem_odp.IbUcontextPerMm` per mm, the
subscription of the single ``ib_umem_notifiers`` ops table, shared by every
verbs context and every device (:mod:`mmu_notifier_rdma_odp.umem_odp`); an
mlx5-like device with MTTs, a fault path with the sequence/count retry test
and implicit ODP (:mod:`mmu_notifier_rdma_odp.device`). ``scheme = "5.3"``
loads the per-(ucontext, mm) scheme of 5.3 instead
(:mod:`mmu_notifier_rdma_odp.legacy`). The scheme object is picked once, in
:meth:`RdmaOdpDriver.__init__`; the 5.3 build's ``ib_umem_notifiers`` has no
``alloc_notifier``/``free_notifier`` (:meth:`RdmaOdpDriver.null_callbacks`
names them, so the loaded ops table has them NULL); the other callbacks are shared and differ
only in the per_mm's liveness test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar

from mmu_notifier import MM, Driver, Kernel, MMUNotifier, Range, hookimpl, sync, synchronize
from mmu_notifier.exerciser import DEVICE_TRANSLATIONS, REFUSES_NONBLOCK, RELEASE
from mmu_notifier_rdma_odp.config import RdmaOdpConfig
from mmu_notifier_rdma_odp.device import IbUcontext, Mlx5Device, Mlx5Mr
from mmu_notifier_rdma_odp.legacy import LegacyPerMm, LegacyScheme
from mmu_notifier_rdma_odp.umem_odp import GetPutScheme, IbUcontextPerMm, IbUmemOdp, PerMmScheme, Pid

if TYPE_CHECKING:
    from mmu_notifier.explore import Scenario
    from mmu_notifier_rdma_odp.exerciser import RdmaOdpExerciser

__all__ = [
    "IbUcontext",
    "IbUcontextPerMm",
    "IbUmemOdp",
    "LegacyPerMm",
    "Mlx5Device",
    "Mlx5Mr",
    "Pid",
    "RdmaOdpConfig",
    "RdmaOdpDriver",
]


#: The builds by ``config.scheme``: the kernel version that shipped each.
SCHEMES: dict[str, type[GetPutScheme] | type[LegacyScheme]] = {"5.3": LegacyScheme, "5.4": GetPutScheme}
#: The members of ``ib_umem_notifiers`` that only some builds fill.
SCHEME_OPS = frozenset({"alloc_notifier", "free_notifier"})


class RdmaOdpDriver(Driver):
    """``ib_umem_notifiers`` plus the verbs layer around it (processes, devices, the system work queue).

    ``pids`` stands for the task table: the pid of the process owning each
    mm. ``in_process(mm)`` marks the running model task as a thread of that
    process (``current->mm == mm``) for the duration of a system call; the
    page-fault path and work items (``schedule_work``) run outside any process.
    """

    name: ClassVar[str] = "rdma_odp"
    version: ClassVar[str] = "5.4"
    config_model: ClassVar[type[RdmaOdpConfig]] = RdmaOdpConfig
    capabilities: ClassVar[frozenset[str]] = frozenset({RELEASE, REFUSES_NONBLOCK, DEVICE_TRANSLATIONS})

    required_hooks: ClassVar[tuple[str, ...]] = ("release", "invalidate_range_start", "invalidate_range_end")

    config: RdmaOdpConfig

    def __init__(self, config: RdmaOdpConfig | None = None) -> None:
        super().__init__(config)
        self.stats: Counter[str] = Counter()
        scheme = SCHEMES[self.config.scheme]
        self.scheme: PerMmScheme = scheme(self)
        self.scheme_ops = scheme.ops
        # the module version is the build's ("5.3" or "5.4")
        self.version = scheme.version  # type: ignore[misc]
        self.pids: dict[int, Pid] = {}
        self._current: dict[sync.Task, MM] = {}

    def null_callbacks(self) -> frozenset[str]:
        """The members of ``ib_umem_notifiers`` the chosen build leaves NULL (5.3: alloc/free_notifier)."""
        return SCHEME_OPS - self.scheme_ops

    # -- processes --------------------------------------------------------------------
    def process(self, mm: MM) -> Pid:
        """The pid of the process that owns ``mm`` (created with the first open)."""
        pid = self.pids.get(mm.id)
        if pid is None:
            pid = self.pids[mm.id] = Pid(mm, f"pid-of-mm{mm.id}")
        return pid

    def process_exit(self, mm: MM) -> None:
        """The owning process exits: its pid loses its task, and it drops its ``mm_users`` reference."""
        self.process(mm).exited = True
        mm.exit()

    @contextmanager
    def in_process(self, mm: MM) -> Iterator[None]:
        """Run the body as a system call of the process owning ``mm``."""
        task = sync.current()
        previous = self._current.get(task)
        self._current[task] = mm
        try:
            yield
        finally:
            if previous is None:
                del self._current[task]
            else:
                self._current[task] = previous

    def current_pid(self, mm: MM) -> Pid | None:
        """``current->group_leader``'s pid if the running task is in ``mm``'s process, else None."""
        if self._current.get(sync.current()) is not mm:
            return None
        return self.process(mm)

    def open(self, device: Mlx5Device, mm: MM) -> IbUcontext:
        """``open("/dev/infiniband/uverbsN")`` by the process owning ``mm``: a new verbs context."""
        return IbUcontext(self, device, mm, self.process(mm))

    def ib_uverbs_cleanup(self, kernel: Kernel) -> None:
        """Module exit: let queued leaf frees finish, then ``mmu_notifier_synchronize``."""
        kernel.system_wq.flush()
        synchronize(kernel)

    # -- ib_umem_notifiers -------------------------------------------------------------
    @hookimpl
    def alloc_notifier(self, mm: MM) -> IbUcontextPerMm:
        """``ib_umem_alloc_notifier``: an empty tree, the creator's tgid; WARN unless ``mm`` is ``current->mm``."""
        pid = self.current_pid(mm)
        if pid is None:
            mm.kernel.warn(f"ib_umem_alloc_notifier: mm {mm.id} is not current->mm")
            pid = Pid(None, "kworker")
        else:
            pid.refs += 1
        self.stats["per_mm_alloc"] += 1
        return IbUcontextPerMm(self, pid)

    @hookimpl
    def free_notifier(self, subscription: MMUNotifier) -> None:
        """``ib_umem_free_notifier`` (atomic context)."""
        assert isinstance(subscription, IbUcontextPerMm)
        subscription.free()

    @hookimpl
    def release(self, subscription: MMUNotifier, mm: MM) -> None:
        """``ib_umem_notifier_release``."""
        assert isinstance(subscription, IbUcontextPerMm)
        subscription.release()

    @hookimpl
    def invalidate_range_start(self, subscription: MMUNotifier, range: Range) -> int:
        """``ib_umem_notifier_invalidate_range_start``: 0 or ``-EAGAIN`` (non-blockable only)."""
        assert isinstance(subscription, IbUcontextPerMm)
        return subscription.invalidate_range_start(range)

    @hookimpl
    def invalidate_range_end(self, subscription: MMUNotifier, range: Range) -> None:
        """``ib_umem_notifier_invalidate_range_end``."""
        assert isinstance(subscription, IbUcontextPerMm)
        subscription.invalidate_range_end(range)

    # -- model plumbing ------------------------------------------------------------------
    @hookimpl
    def exerciser(self, kernel: Kernel) -> RdmaOdpExerciser:
        """The conformance exerciser: a verbs context and an MR per attach, two devices."""
        from mmu_notifier_rdma_odp.exerciser import RdmaOdpExerciser

        return RdmaOdpExerciser(kernel, self)

    @hookimpl
    def explore_scenarios(self) -> list[Scenario]:
        """The plugin's explorer scenarios: the historical bugs and their fixed forms."""
        from mmu_notifier_rdma_odp.scenarios import SCENARIOS

        return list(SCENARIOS)
