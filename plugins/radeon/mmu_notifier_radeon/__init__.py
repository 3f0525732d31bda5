"""radeon userptr (``drivers/gpu/drm/radeon/radeon_mn.c``): one ``radeon_mn`` per mm, one user per registered BO.

A userptr BO (``DRM_RADEON_GEM_USERPTR``) is backed by a process's anonymous
memory; registering it puts it in its mm's ``radeon_mn`` interval tree, whose
``invalidate_range_start`` moves every affected BO out of the GTT (after its
fences signalled) before the CPU changes the pages. ``config.scheme`` selects
the kernel:

* ``"5.4"`` (default): patch 08 of the get/put series and the
  unpaired-unregister guard (:mod:`mmu_notifier_radeon.radeon_mn`);
* ``"5.3"``: the per-device hash, no refcount, a release that only schedules
  the destroy work (:mod:`mmu_notifier_radeon.legacy`).

The scheme is chosen once, in :data:`SCHEMES`; every hook below delegates to
it. A :class:`RadeonDriver` object is the loaded module; its per-kernel state
(devices, GTTs, open files) is a :class:`~mmu_notifier_radeon.device.Radeon`
made on first use by :meth:`RadeonDriver.radeon`. Importing this package
configures no logging and starts no task.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast
from weakref import WeakKeyDictionary

from mmu_notifier import MM, Driver, Kernel, MMUNotifier, Range, hookimpl
from mmu_notifier_radeon.config import RadeonConfig
from mmu_notifier_radeon.device import Radeon
from mmu_notifier_radeon.exerciser import CAPABILITIES, RadeonExerciser
from mmu_notifier_radeon.legacy import Scheme53
from mmu_notifier_radeon.radeon_mn import RadeonMN, Scheme, Scheme54, invalidate_range_start

__version__ = "0.1.0"

__all__ = ["SCHEMES", "RadeonConfig", "RadeonDriver", "RadeonExerciser", "RadeonMN"]

#: The registration code of each kernel, by ``config.scheme``.
SCHEMES: dict[str, type[Scheme]] = {"5.4": Scheme54, "5.3": Scheme53}
#: The members of ``radeon_mn_ops`` that only some kernels fill (5.3 has no alloc/free_notifier).
SCHEME_OPS = frozenset({"alloc_notifier", "free_notifier"})


class RadeonDriver(Driver):
    """The radeon module; ``radeon_mn_ops`` is the chosen kernel's table.

    5.4: release, invalidate_range_start, alloc_notifier and free_notifier;
    5.3: release and invalidate_range_start. A callback of :data:`SCHEME_OPS`
    the chosen kernel does not fill is named by :meth:`null_callbacks`, so the
    loaded ops table has it as ``None``, as a NULL member of that kernel's
    ``struct mmu_notifier_ops``.
    """

    name: ClassVar[str] = "radeon"
    version: ClassVar[str] = __version__
    config_model: ClassVar[type[RadeonConfig]] = RadeonConfig
    required_hooks: ClassVar[tuple[str, ...]] = ("release", "invalidate_range_start")
    capabilities: ClassVar[frozenset[str]] = CAPABILITIES

    def __init__(self, config: RadeonConfig | None = None) -> None:
        super().__init__(config)
        self.radeon_config = cast(RadeonConfig, self.config)
        self.scheme = SCHEMES[self.radeon_config.scheme]()
        self._modules: WeakKeyDictionary[Kernel, Radeon] = WeakKeyDictionary()

    def null_callbacks(self) -> frozenset[str]:
        """The callbacks of :data:`SCHEME_OPS` the chosen kernel leaves NULL in ``radeon_mn_ops``."""
        return SCHEME_OPS - self.scheme.ops

    def radeon(self, kernel: Kernel) -> Radeon:
        """The module's state on ``kernel`` (``radeon_init`` and the devices' probe), made on first use."""
        module = self._modules.get(kernel)
        if module is None:
            module = Radeon(kernel, self, kernel.drivers.ops_of(self), self.radeon_config, self.scheme)
            self._modules[kernel] = module
        return module

    def _module_of(self, subscription: MMUNotifier) -> Radeon:
        assert subscription.mm is not None
        return self.radeon(subscription.mm.kernel)

    @hookimpl
    def alloc_notifier(self, mm: MM) -> MMUNotifier:
        """``radeon_mn_alloc_notifier`` (5.4): an empty ``radeon_mn``."""
        return self.scheme.alloc_notifier(self.radeon(mm.kernel), mm)

    @hookimpl
    def free_notifier(self, subscription: MMUNotifier) -> None:
        """``radeon_mn_free_notifier`` (5.4): kfree (atomic context: nothing sleeps)."""
        self.scheme.free_notifier(self._module_of(subscription), cast(RadeonMN, subscription))

    @hookimpl
    def release(self, subscription: MMUNotifier, mm: MM) -> None:
        """``radeon_mn_release``: 5.4 a full-range start with flags 0; 5.3 schedules the destroy work."""
        self.scheme.release(self.radeon(mm.kernel), cast(RadeonMN, subscription), mm)

    @hookimpl
    def invalidate_range_start(self, subscription: MMUNotifier, range: Range) -> int:
        """``radeon_mn_invalidate_range_start`` (the same code in 5.3 and 5.4)."""
        return invalidate_range_start(self.radeon(range.mm.kernel), cast(RadeonMN, subscription), range)

    @hookimpl
    def exerciser(self, kernel: Any) -> RadeonExerciser:
        """The conformance exerciser on ``kernel``."""
        return RadeonExerciser(self.radeon(kernel))

    @hookimpl
    def explore_scenarios(self) -> list[Any]:
        """The bugs of patch 08, the guard, the 5.4 readings and the CS race (see :mod:`.scenarios`)."""
        from mmu_notifier_radeon.scenarios import SCENARIOS

        return list(SCENARIOS)
