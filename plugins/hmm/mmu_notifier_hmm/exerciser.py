"""The conformance exerciser of the ``hmm`` driver: one model device mirror per attach.

Each :meth:`HmmExerciser.attach` opens a :class:`~mmu_notifier_hmm.device.DeviceMirror`
on the mm and binds it (``hmm_mirror_register`` under the mmap write lock,
ending in ``mmu_notifier_get_locked``); :meth:`HmmExerciser.detach` drops its
translations and unbinds it (ending in ``mmu_notifier_put``). A device mirrors
the whole address space, so ``map_range`` only records the interest; under
``scheme = "5.5"`` (capability ``interval``) it also inserts a long-lived
interval notifier over the range (:meth:`DeviceMirror.track`), removed by
``detach``, which the device's faults there use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmu_notifier import MM, Kernel, synchronize
from mmu_notifier.exerciser import Handle
from mmu_notifier_hmm.device import DeviceMirror

if TYPE_CHECKING:
    from mmu_notifier_hmm import HmmDriver


class HmmExerciser:
    """:class:`mmu_notifier.exerciser.Exerciser` for ``hmm``."""

    driver = "hmm"

    def __init__(self, kernel: Kernel, hmm_driver: HmmDriver) -> None:
        self.kernel = kernel
        self.hmm_driver = hmm_driver
        self.capabilities = hmm_driver.capabilities
        #: every open device, oldest first (a dict: a detach is O(1) at any scale)
        self.devices: dict[DeviceMirror, None] = {}
        #: the open devices of each mm, so :meth:`translations` costs O(that mm's devices)
        self._of_mm: dict[MM, dict[DeviceMirror, None]] = {}

    def attach(self, mm: MM) -> Handle:
        """Open a device on ``mm`` and bind it as a mirror (takes the struct hmm reference)."""
        device = DeviceMirror(mm, self.hmm_driver.config)
        device.bind()
        self.devices[device] = None
        self._of_mm.setdefault(mm, {})[device] = None
        assert device.hmm is not None
        return Handle(mm, device.hmm, device)

    def map_range(self, handle: Handle, start: int, end: int) -> None:
        """Record the interest (an HMM device mirrors the whole address space); 5.5: track it with an interval."""
        handle.ranges.append((start, end))
        if self.hmm_driver.config.scheme == "5.5":
            device: DeviceMirror = handle.state
            device.track(start, end)

    def access(self, handle: Handle, address: int, write: bool = False) -> int | None:
        """A device access through the device's fault path (see :meth:`DeviceMirror.access`)."""
        device: DeviceMirror = handle.state
        return device.access(address, write)

    def translations(self, mm: MM) -> dict[int, int]:
        """The translations every device of ``mm`` holds, merged (they agree when coherent).

        The mm's devices are copied first, in one C call: on OS threads (the main job's threads mode) a check of the
        mm may run on another thread while the process itself binds and unbinds devices, and iterating the live
        dict there may raise "dictionary changed size during iteration".
        """
        merged: dict[int, int] = {}
        for device in list(self._of_mm.get(mm, ())):
            merged.update(device.translations())
        return merged

    def detach(self, handle: Handle) -> None:
        """Drop the device's translations and unbind it (``hmm_mirror_unregister``: the put)."""
        device: DeviceMirror = handle.state
        device.unbind()
        del self.devices[device]
        self._forget(device)

    def _forget(self, device: DeviceMirror) -> None:
        of_mm = self._of_mm[device.mm]
        del of_mm[device]
        if not of_mm:
            del self._of_mm[device.mm]

    def unload(self) -> None:
        """Module unload: unbind every device left, then wait for every pending free."""
        for device in list(self.devices):
            device.unbind()
        self.devices.clear()
        self._of_mm.clear()
        synchronize(self.kernel)
