"""amdkfd (``drivers/gpu/drm/amd/amdkfd/kfd_process.c``): the kfd_process, a release-only notifier.

One ``kfd_process`` exists per mm that opened /dev/kfd. Its embedded notifier
has one real callback, ``release``: kfd learns from it that the process is
gone and tears everything down. In 5.4 it is registered with plain
``register`` (users = 1) and ``release`` ends with ``put``, so the core frees
it after a grace period through ``free_notifier``, which drops the kref the mm
held. ``config.scheme`` selects the kernel:

* ``"5.4"`` (default): after patches 09 and 10; registration is the last
  failable step of creation, CWSR set-up comes after and its failure leaves
  the process to mm teardown;
* ``"5.3"``: registration early, later failures unwind with
  ``unregister_no_release`` and an immediate ``kfree``: the race of patch 09
  (:mod:`mmu_notifier_amdkfd.legacy`);
* ``"5.13"``: the 2021 conversion ("drm/amdkfd: Use mmu_notifier_get", first
  shipped in Linux 5.13); ``alloc_notifier`` finds the process in the table,
  and a failed CWSR set-up is undone with ``put``.

The scheme is chosen once, in :class:`KfdDriver`'s constructor, as a scheme
object (:class:`~mmu_notifier_amdkfd.legacy.Scheme53`,
:class:`~mmu_notifier_amdkfd.lifetime.Scheme54`,
:class:`~mmu_notifier_amdkfd.lifetime.Scheme513`) that every hook and entry
point delegates to. A :class:`KfdDriver` object is the loaded module; its
per-machine state (the process table, the allocators, the workqueues) is a
:class:`~mmu_notifier_amdkfd.lifetime.Kfd`, made on first use for each
:class:`~mmu_notifier.Kernel` by :meth:`KfdDriver.kfd`. Importing this package
configures no logging and starts no task.

Modules: :mod:`~mmu_notifier_amdkfd.config`, :mod:`~mmu_notifier_amdkfd.kfd_process`
(``struct kfd_process``), :mod:`~mmu_notifier_amdkfd.lifetime` (creation,
krefs, release; the module state), :mod:`~mmu_notifier_amdkfd.process_table`,
:mod:`~mmu_notifier_amdkfd.workqueue`, :mod:`~mmu_notifier_amdkfd.device`
(GPUs, queues, id pools, IOMMUv2), :mod:`~mmu_notifier_amdkfd.faults`,
:mod:`~mmu_notifier_amdkfd.legacy`, :mod:`~mmu_notifier_amdkfd.scenarios`,
:mod:`~mmu_notifier_amdkfd.exerciser`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast
from weakref import WeakKeyDictionary

from mmu_notifier import MM, Driver, MMUNotifier, hookimpl
from mmu_notifier_amdkfd.config import FaultPoint, KfdConfig, KfdFaults
from mmu_notifier_amdkfd.exerciser import CAPABILITIES, KfdExerciser
from mmu_notifier_amdkfd.kfd_process import KfdProcess, KfdProcessNotifier
from mmu_notifier_amdkfd.legacy import Scheme53
from mmu_notifier_amdkfd.lifetime import Kfd, Scheme54, Scheme513

if TYPE_CHECKING:
    from mmu_notifier import Kernel
    from mmu_notifier.explore import Scenario
    from mmu_notifier.plugins import MMUNotifierOps

__version__ = "0.1.0"

__all__ = [
    "FaultPoint",
    "Kfd",
    "KfdConfig",
    "KfdDriver",
    "KfdExerciser",
    "KfdFaults",
    "KfdProcess",
    "KfdProcessNotifier",
]

#: The creation/teardown code of each kernel, by ``config.scheme`` (the kernel version that shipped it).
SCHEMES: dict[str, type[Scheme54]] = {"5.3": Scheme53, "5.4": Scheme54, "5.13": Scheme513}
#: The members of ``kfd_process_mmu_notifier_ops`` that only some kernels fill.
SCHEME_OPS = frozenset({"alloc_notifier"})


def _process(subscription: MMUNotifier) -> KfdProcess:
    """``container_of(mn, struct kfd_process, mmu_notifier)``."""
    return cast(KfdProcessNotifier, subscription).process


class KfdDriver(Driver):
    """The amdkfd module: notifier ops ``release`` and ``free_notifier`` (plus ``alloc_notifier`` from 5.13 on).

    A callback of :data:`SCHEME_OPS` that the chosen kernel does not fill is
    named by :meth:`null_callbacks`, so the core leaves it absent (``None``)
    from the ops table, as a NULL member of that kernel's ``struct mmu_notifier_ops``.
    """

    name: ClassVar[str] = "amdkfd"
    version: ClassVar[str] = __version__
    config_model: ClassVar[type[KfdConfig]] = KfdConfig
    required_hooks: ClassVar[tuple[str, ...]] = ("free_notifier", "release")
    capabilities: ClassVar[frozenset[str]] = CAPABILITIES

    def __init__(self, config: KfdConfig | None = None) -> None:
        super().__init__(config)
        self.kfd_config = cast(KfdConfig, self.config)
        self.scheme = SCHEMES[self.kfd_config.scheme]()
        self._kfds: WeakKeyDictionary[Kernel, Kfd] = WeakKeyDictionary()

    def null_callbacks(self) -> frozenset[str]:
        """The callbacks of :data:`SCHEME_OPS` the chosen kernel leaves NULL in its ops."""
        return SCHEME_OPS - self.scheme.ops

    def kfd(self, kernel: Kernel, ops: MMUNotifierOps | None = None) -> Kfd:
        """The module's state on ``kernel`` (``kfd_init``), made on first use.

        ``ops`` is what registration names the driver by; it defaults to this
        driver's ops in ``kernel``. Pass the ops of an earlier load to use the
        driver on a kernel it was not added to (explorer scenarios do, to skip
        re-resolving the hooks for every schedule).
        """
        kfd = self._kfds.get(kernel)
        if kfd is None:
            kfd = Kfd(kernel, ops or kernel.drivers.ops_of(self), self.kfd_config, self.scheme)
            self._kfds[kernel] = kfd
        return kfd

    @hookimpl
    def alloc_notifier(self, mm: MM) -> MMUNotifier:
        """``kfd_process_alloc_notifier`` (5.13): the notifier of the process already in the table."""
        return cast(Scheme513, self.scheme).alloc_notifier(self.kfd(mm.kernel), mm)

    @hookimpl
    def release(self, subscription: MMUNotifier, mm: MM) -> None:
        """``kfd_process_notifier_release``: the mm is going; tear the process down and drop the mm's reference."""
        process = _process(subscription)
        process.kfd.release(process, mm)

    @hookimpl
    def free_notifier(self, subscription: MMUNotifier) -> None:
        """``kfd_process_free_notifier``: drop the kref the mm held (the release work frees the process)."""
        process = _process(subscription)
        process.notifier_freed = True
        process.kfd.unref_process(process)

    @hookimpl
    def exerciser(self, kernel: Kernel) -> KfdExerciser:
        """The conformance exerciser on ``kernel``."""
        return KfdExerciser(self.kfd(kernel))

    @hookimpl
    def explore_scenarios(self) -> list[Scenario]:
        """The open races of the three schemes (see :mod:`mmu_notifier_amdkfd.scenarios`)."""
        from mmu_notifier_amdkfd.scenarios import SCENARIOS

        return list(SCENARIOS)
