"""gntdev's side of the driver-neutral exerciser contract (:mod:`mmu_notifier.exerciser`).

Each method walks the driver's own user-facing path, so the conformance kit
and the main job test what a process would do:

======================  ===================================================
contract                gntdev
======================  ===================================================
``attach(mm)``          ``open("/dev/xen/gntdev")``: ``mmu_notifier_get``
``map_range(h, s, e)``  ``IOCTL_GNTDEV_MAP_GRANT_REF`` + mmap at ``[s, e)``
``access(h, addr)``     the other domain touches a grant page: it is mapped
``translations(mm)``    every grant page mapped now, over all files of ``mm``
``detach(h)``           ``close()``: unmap the file's grants, ``mmu_notifier_put``
``unload()``            module exit: close what is open, ``mmu_notifier_synchronize``
======================  ===================================================

With ``scheme = "5.5"`` (:mod:`mmu_notifier_gntdev.interval`): ``attach`` opens
the file without any ``get`` (the handle holds no list subscription),
``map_range`` mmaps a grant map (inserting its interval notifier),
``access`` maps a page through ``read_begin``/``read_retry`` and ``detach``
removes every map's notifier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmu_notifier import synchronize
from mmu_notifier.exerciser import Handle
from mmu_notifier_gntdev import interval

if TYPE_CHECKING:
    from mmu_notifier.kernel import Kernel
    from mmu_notifier.mm import MM
    from mmu_notifier_gntdev import GntdevDriver
    from mmu_notifier_gntdev.gntdev_mm import GntdevPriv


class GntdevExerciser:
    """Drives one :class:`~mmu_notifier_gntdev.GntdevDriver` loaded into ``kernel``."""

    def __init__(self, kernel: Kernel, driver: GntdevDriver) -> None:
        self.kernel = kernel
        self.gntdev = driver
        self.driver = driver.name
        self.capabilities = driver.capabilities
        #: open files (5.4 and 5.5 kinds), oldest first (dicts: a close is O(1) at any scale)
        self.files: dict[GntdevPriv, None] = {}
        self.files55: dict[interval.GntdevFile, None] = {}
        #: the open files of each mm, so :meth:`translations` costs O(that mm's files)
        self._of_mm: dict[MM, dict[GntdevPriv | interval.GntdevFile, None]] = {}

    def attach(self, mm: MM) -> Handle:
        """Open the device for ``mm``."""
        if self.gntdev.interval:
            file = interval.gntdev_open(mm)
            self.files55[file] = None
            self._of_mm.setdefault(mm, {})[file] = None
            return Handle(mm, None, file)
        priv = self.gntdev.gntdev_open(mm)
        self.files[priv] = None
        self._of_mm.setdefault(mm, {})[priv] = None
        return Handle(mm, priv.gmm, priv)

    def map_range(self, handle: Handle, start: int, end: int) -> None:
        """Map grants at ``[start, end)`` (the pages are mapped when first touched)."""
        if self.gntdev.interval:
            interval.gntdev_mmap(self.gntdev, handle.state, start, end)
        else:
            self.gntdev.ioctl_map_grant_ref(handle.state, start, end)
        handle.ranges.append((start, end))

    def access(self, handle: Handle, address: int, write: bool = False) -> int | None:
        """The other domain touches the grant page at ``address``."""
        if self.gntdev.interval:
            return interval.map_grant_page(handle.state, address, write)
        return self.gntdev.map_grant_pages(handle.state, address, write)

    def translations(self, mm: MM) -> dict[int, int]:
        """Every grant page mapped now in ``mm``: virtual page number -> frame.

        The mm's files are copied first, in one C call: on OS threads (the main job's threads mode) a check of the
        mm may run on another thread while the process itself opens and closes files, and iterating the live
        dict there may raise "dictionary changed size during iteration".
        """
        found: dict[int, int] = {}
        for file in list(self._of_mm.get(mm, ())):
            for grant_map in file.maps:
                found.update(grant_map.pages)
        return found

    def detach(self, handle: Handle) -> None:
        """Close the file."""
        self._forget(handle.state)
        if self.gntdev.interval:
            del self.files55[handle.state]
            interval.gntdev_release(handle.state)
            return
        del self.files[handle.state]
        self.gntdev.gntdev_release(handle.state)

    def _forget(self, file: GntdevPriv | interval.GntdevFile) -> None:
        of_mm = self._of_mm[file.mm]
        del of_mm[file]
        if not of_mm:
            del self._of_mm[file.mm]

    def unload(self) -> None:
        """Module exit: close every file still open and wait for every pending free."""
        for file in list(self.files55):
            del self.files55[file]
            self._forget(file)
            interval.gntdev_release(file)
        for priv in list(self.files):
            del self.files[priv]
            self._forget(priv)
            self.gntdev.gntdev_release(priv)
        synchronize(self.kernel)
