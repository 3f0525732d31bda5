"""Xen gntdev (``drivers/xen/gntdev.c``) converted to get/put: an example third-party driver plugin.

Installed, it is found through the ``mmu_notifier.drivers`` entry point
``gntdev`` and passes the conformance kit (``mmu-notifier conformance gntdev``).
The plugin guide (``docs/plugin-guide.md`` of the mmu-notifier repository)
walks through it. This module holds the driver class and every hook; the
package follows the plugin shape: :mod:`~mmu_notifier_gntdev.config`,
:mod:`~mmu_notifier_gntdev.gntdev_mm` (the per-mm object),
:mod:`~mmu_notifier_gntdev.device` (grant maps),
:mod:`~mmu_notifier_gntdev.exerciser`.

What the 5.4 driver does (see the reference's drivers.md, section 7): a
process opens ``/dev/xen/gntdev``, asks with ``IOCTL_GNTDEV_MAP_GRANT_REF``
for a set of grant references of another domain and mmaps them; in PV mode
the hypervisor then maps the foreign pages at the VMA's page-table entries.
Each open registered its **own** notifier on the caller's mm, so a process
with several open files had several notifiers of the same ops on one mm.
Its ``invalidate_range_start`` walks the file's grant maps and unmaps (with
the grant-table hypercall) every map that overlaps the range; when the range
is non-blockable it returns ``-EAGAIN`` as soon as the file lock is
contended or any map overlaps. Its ``release`` unmaps every map of the file.

The conversion this plugin makes, which the get/put cover letter says
gntdev "could" do: the notifier moves from the file to a per-mm object,
:class:`GntdevMM`, shared by every open file of the mm: ``open`` does
``mmu_notifier_get`` (``alloc_notifier`` makes the object), ``close`` drops
the file's maps and does ``mmu_notifier_put`` (``free_notifier`` frees it
after the grace period). One notifier per mm instead of one per file, and no
``mmu_notifier_unregister`` (and its grace-period wait) on close.

Modelling choices, made explicit:

* the "device translation" of a grant page is the hypervisor's record of
  where the grant is mapped; the model represents it as the frame the CPU
  page table holds at that virtual page when the grant is mapped there
  (``map_grant_pages`` faults the page in and records ``vpn -> frame``). A
  record that survives an invalidation of its page is the stale mapping the
  notifier exists to prevent;
* grants are mapped lazily, page by page, when the other domain touches them
  (:meth:`GntdevDriver.map_grant_pages`), so that mapping can race an
  invalidation. 5.4 gntdev maps at mmap time under the mmap lock; mapping
  without it needs what every mirror driver has: a count of invalidations in
  flight (``active``, raised by start and lowered by end) and a sequence
  number, so a mapping that raced an invalidation is retried instead of
  recorded. That is why this model has an ``invalidate_range_end`` the 5.4
  driver does not need.

``scheme = "5.5"`` is gntdev after "xen/gntdev: use mmu_interval_notifier_insert"
(:mod:`~mmu_notifier_gntdev.interval`): no per-mm object, one interval notifier
per grant map; the ops hold only ``invalidate`` (the list callbacks are named in
:meth:`GntdevDriver.null_callbacks`). The scheme is chosen once, in ``__init__``.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, ClassVar, cast

from mmu_notifier import exerciser as caps
from mmu_notifier import get, put
from mmu_notifier.config import DriverConfig
from mmu_notifier.errors import BadAddressError, InvalidArgumentError
from mmu_notifier.hookspecs import hookimpl
from mmu_notifier.interval import MMUIntervalNotifier
from mmu_notifier.notifier import MMUNotifier
from mmu_notifier.plugins import Driver
from mmu_notifier_gntdev.config import GntdevConfig
from mmu_notifier_gntdev.device import GrantMap
from mmu_notifier_gntdev.exerciser import GntdevExerciser
from mmu_notifier_gntdev.gntdev_mm import GntdevMM, GntdevPriv
from mmu_notifier_gntdev.interval import GrantMapNotifier, gntdev_invalidate

if TYPE_CHECKING:
    from mmu_notifier.kernel import Kernel
    from mmu_notifier.mm import MM
    from mmu_notifier.range import Range

__all__ = ["GntdevConfig", "GntdevDriver", "GntdevExerciser", "GntdevMM", "GntdevPriv", "GrantMap"]


class GntdevDriver(Driver):
    """The gntdev driver: the notifier hooks plus the file operations a process uses."""

    name: ClassVar[str] = "gntdev"
    version: ClassVar[str] = "0.1.0"
    config_model: ClassVar[type[DriverConfig]] = GntdevConfig
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {caps.RELEASE, caps.REFUSES_NONBLOCK, caps.TRACKS_RANGES, caps.DEVICE_TRANSLATIONS}
    )

    config: GntdevConfig

    #: the list callbacks 5.4 fills and 5.5 does not (and the reverse)
    LIST_CALLBACKS: ClassVar[frozenset[str]] = frozenset(
        {"alloc_notifier", "free_notifier", "release", "invalidate_range_start", "invalidate_range_end"})

    def __init__(self, config: DriverConfig | None = None) -> None:
        super().__init__(config)
        self.interval = self.config.scheme == "5.5"
        if self.interval:  # chosen once: what the loader requires and what the kit may expect
            setattr(self, "required_hooks", ("invalidate",))  # noqa: B010
            setattr(self, "capabilities", frozenset(  # noqa: B010
                {caps.REFUSES_NONBLOCK, caps.TRACKS_RANGES, caps.DEVICE_TRANSLATIONS, caps.INTERVAL,
                 caps.INTERVAL_ONLY}))

    def null_callbacks(self) -> frozenset[str]:
        """5.4 has no interval ``invalidate``; 5.5 none of the list callbacks."""
        return self.LIST_CALLBACKS if self.interval else frozenset({"invalidate"})

    # -- file operations (the user-facing path) -------------------------------------
    def gntdev_open(self, mm: MM) -> GntdevPriv:
        """``open("/dev/xen/gntdev")``: take this mm's shared notifier (``mmu_notifier_get``)."""
        gmm = cast(GntdevMM, get(self, mm))
        priv = GntdevPriv(gmm, mm)
        with gmm.lock:
            gmm.files.append(priv)
        return priv

    def ioctl_map_grant_ref(self, priv: GntdevPriv, start: int, end: int) -> GrantMap:
        """``IOCTL_GNTDEV_MAP_GRANT_REF`` plus the mmap of its index at ``[start, end)``.

        Raises :class:`InvalidArgumentError` (EINVAL) beyond the ``limit``
        parameter and :class:`BadAddressError` (EFAULT) once the mm is gone.
        """
        pages = (end - start) >> priv.mm.page_shift
        if pages <= 0 or pages > self.config.limit:
            raise InvalidArgumentError(f"gntdev: {pages} grant pages (limit {self.config.limit})")
        gmm = priv.gmm
        with gmm.lock:
            if gmm.dead:
                raise BadAddressError(f"gntdev: mm {priv.mm.id} is gone")
            grant_map = GrantMap(start, end, priv.mm.page_shift)
            priv.maps.append(grant_map)
        return grant_map

    def map_grant_pages(self, priv: GntdevPriv, address: int, write: bool = False) -> int | None:
        """The other domain touches the grant page at ``address``: map it; returns the frame.

        ``None`` means "retry": an invalidation is in flight or raced the
        mapping, or the mm is going away. Raises :class:`BadAddressError`
        when no grant map of the file covers ``address`` or the CPU cannot
        fault the page in.
        """
        gmm = priv.gmm
        grant_map = next((m for m in priv.maps if m.start <= address < m.end), None)
        if grant_map is None:
            raise BadAddressError(f"gntdev: no grant map covers {address:#x}")
        with gmm.range_lock:
            if gmm.active:
                return None
            seq = gmm.seq
        mm = priv.mm
        if not mm.mmget_not_zero():
            return None
        try:
            pfn = mm.fault(address, write)
        finally:
            mm.mmput()
        with gmm.lock:
            with gmm.range_lock:
                raced = gmm.active or gmm.seq != seq
            if raced or gmm.dead or grant_map not in priv.maps:
                return None
            grant_map.pages[address >> mm.page_shift] = pfn
        return pfn

    def gntdev_release(self, priv: GntdevPriv) -> None:
        """``close()`` of the file: unmap every grant of the file, then ``mmu_notifier_put``.

        With get/put, release is not guaranteed to run, so the file's
        mappings must be gone before the put.
        """
        gmm = priv.gmm
        with gmm.lock:
            for grant_map in priv.maps:
                self.unmap_grant_pages(grant_map, grant_map.start, grant_map.end)
            priv.maps.clear()
            gmm.files.remove(priv)
        put(gmm)

    # -- helpers ----------------------------------------------------------------------
    def unmap_grant_pages(self, grant_map: GrantMap, start: int, end: int) -> None:
        """Unmap the grant pages of ``grant_map`` inside ``[start, end)`` (the unmap hypercall)."""
        shift = grant_map.page_shift
        for vpn in [v for v in grant_map.pages if start <= v << shift < end]:
            del grant_map.pages[vpn]

    def unmap_if_in_range(self, grant_map: GrantMap, start: int, end: int) -> None:
        """Unmap the part of ``grant_map`` that overlaps ``[start, end)``."""
        self.unmap_grant_pages(grant_map, max(start, grant_map.start), min(end, grant_map.end))

    # -- notifier callbacks -----------------------------------------------------------
    @hookimpl
    def alloc_notifier(self, mm: MM) -> MMUNotifier:
        """The first open on ``mm`` makes its :class:`GntdevMM`."""
        return GntdevMM()

    @hookimpl
    def free_notifier(self, subscription: MMUNotifier) -> None:
        """After the last close and a grace period; atomic context, so nothing here sleeps."""
        gmm = cast(GntdevMM, subscription)
        if gmm.files and gmm.mm is not None:
            gmm.mm.kernel.warn(f"gntdev: freeing the notifier of mm {gmm.mm.id} with {len(gmm.files)} open file(s)")

    @hookimpl
    def release(self, subscription: MMUNotifier, mm: MM) -> None:
        """``mn_release``: the mm is being torn down; unmap every grant of every file on it."""
        gmm = cast(GntdevMM, subscription)
        with gmm.lock:
            gmm.dead = True
            for priv in gmm.files:
                for grant_map in priv.maps:
                    self.unmap_grant_pages(grant_map, grant_map.start, grant_map.end)

    @hookimpl
    def invalidate_range_start(self, subscription: MMUNotifier, range: Range) -> int:
        """``mn_invl_range_start``: unmap every grant map that overlaps ``range``.

        Non-blockable: trylock the mutex and refuse (``-EAGAIN``) when it is
        contended or when any map overlaps, since unmapping may sleep.
        """
        gmm = cast(GntdevMM, subscription)
        if range.blockable:
            gmm.lock.lock()
        elif not gmm.lock.trylock():
            return -errno.EAGAIN
        try:
            hit = [m for priv in gmm.files for m in priv.maps if m.overlaps(range.start, range.end)]
            if hit and not range.blockable:
                return -errno.EAGAIN
            with gmm.range_lock:
                gmm.active += 1
                gmm.seq += 1
            for grant_map in hit:
                self.unmap_if_in_range(grant_map, range.start, range.end)
        finally:
            gmm.lock.unlock()
        return 0

    @hookimpl
    def invalidate_range_end(self, subscription: MMUNotifier, range: Range) -> None:
        """The range is done: grants may be mapped again."""
        gmm = cast(GntdevMM, subscription)
        with gmm.range_lock:
            gmm.active -= 1

    @hookimpl
    def invalidate(self, subscription: MMUIntervalNotifier, range: Range, cur_seq: int) -> bool:
        """``gntdev_invalidate`` (5.5): one grant map's part of ``range`` unmapped; non-blockable refused."""
        return gntdev_invalidate(cast(GrantMapNotifier, subscription), range, cur_seq)

    # -- the kit's way in -------------------------------------------------------------
    @hookimpl
    def exerciser(self, kernel: Kernel) -> GntdevExerciser:
        """The driver-neutral exerciser (see :mod:`mmu_notifier_gntdev.exerciser`)."""
        return GntdevExerciser(kernel, self)


__version__ = GntdevDriver.version
