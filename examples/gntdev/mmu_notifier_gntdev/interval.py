"""gntdev on interval notifiers (``scheme = "5.5"``, "xen/gntdev: use mmu_interval_notifier_insert", d3eeb1d77c5d).

5.5 dropped the per-file notifier: every grant map embeds its own interval
notifier (``map->notifier``, :class:`GrantMapNotifier`), inserted when the
map is mmapped (``gntdev_mmap``, under the mmap lock held for write:
``mmu_interval_notifier_insert_locked``) over the VMA, and removed when the
map goes (``gntdev_vma_close`` / unmap). The callback
(:func:`gntdev_invalidate`) refuses every non-blockable range (unmapping a
grant may sleep) and otherwise unmaps the part of the map inside the range.
There is no ``release``: at exit the core sends each map one blockable
``RELEASE`` range and the callback unmaps it.

One modelling choice differs from the kernel, as in the 5.4 form: grant
pages are mapped lazily, page by page, when the other domain touches them,
so a mapping can race an invalidation. The model closes that race the
documented 5.5 way: the file's ``lock`` (an :class:`IntervalMirror`'s
``update``) is taken by the callback, which records ``set_seq`` under it,
and the mapping path is ``read_begin`` / fault / ``read_retry`` under the
lock. The kernel maps every grant at mmap time and so needs no sequence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmu_notifier import interval_notifier_insert_locked, interval_notifier_remove, interval_set_seq, kmem
from mmu_notifier.errors import BadAddressError, BusyError, InvalidArgumentError
from mmu_notifier.interval import MMUIntervalNotifier
from mmu_notifier.interval_pattern import IntervalMirror
from mmu_notifier_gntdev.device import GrantMap

if TYPE_CHECKING:
    from mmu_notifier.mm import MM
    from mmu_notifier.range import Range
    from mmu_notifier_gntdev import GntdevDriver

__all__ = ["GntdevFile", "GrantMapNotifier", "gntdev_invalidate", "gntdev_mmap", "gntdev_open", "gntdev_release",
           "map_grant_page"]


class GrantMapNotifier(MMUIntervalNotifier):
    """``map->notifier``: the interval notifier of one grant map (``container_of`` is :attr:`map`)."""

    def __init__(self, grant_map: GrantMap, file: GntdevFile) -> None:
        super().__init__()
        self.map = grant_map
        self.file = file


class GntdevFile:
    """``struct gntdev_priv`` of 5.5: the file's maps and its lock; no notifier of its own."""

    def __init__(self, mm: MM) -> None:
        self.mm = mm
        self.mirror = IntervalMirror("gntdev_priv.lock")
        self.maps: list[GrantMap] = []
        self.notifiers: list[GrantMapNotifier] = []


def gntdev_open(mm: MM) -> GntdevFile:
    """``open("/dev/xen/gntdev")``: 5.5 registers nothing on the mm."""
    return GntdevFile(mm)


def gntdev_mmap(driver: GntdevDriver, file: GntdevFile, start: int, end: int) -> GrantMap:
    """``IOCTL_GNTDEV_MAP_GRANT_REF`` + ``gntdev_mmap``: insert the map's interval notifier under the mmap lock."""
    mm = file.mm
    pages = (end - start) >> mm.page_shift
    if pages <= 0 or pages > driver.config.limit:
        raise InvalidArgumentError(f"gntdev: {pages} grant pages (limit {driver.config.limit})")
    if not mm.mmget_not_zero():
        raise BadAddressError(f"gntdev: mm {mm.id} is gone")
    try:
        grant_map = GrantMap(start, end, mm.page_shift)
        sub = GrantMapNotifier(grant_map, file)
        mm.mmap_lock.down_write()  # mmap(2) holds it for write around the driver's mmap
        try:
            interval_notifier_insert_locked(sub, mm, start, end - start, driver)
        finally:
            mm.mmap_lock.up_write()
    finally:
        mm.mmput()
    with file.mirror.update:
        file.maps.append(grant_map)
        file.notifiers.append(sub)
    return grant_map


def gntdev_invalidate(sub: GrantMapNotifier, range: Range, cur_seq: int) -> bool:
    """``gntdev_invalidate``: refuse a non-blockable range; else unmap the map's part of ``range``."""
    if not range.blockable:
        return False
    grant_map = sub.map
    start, end = max(range.start, grant_map.start), min(range.end, grant_map.end)
    with sub.file.mirror.update:
        interval_set_seq(sub, cur_seq)  # the model's lazy mapping reads it (see the module text)
        shift = grant_map.page_shift
        for vpn in [v for v in grant_map.pages if start <= v << shift < end]:
            del grant_map.pages[vpn]
    return True


def map_grant_page(file: GntdevFile, address: int, write: bool = False) -> int | None:
    """The other domain touches the grant page at ``address``: fault it in and map it; ``None`` means retry."""
    sub = next((s for s in file.notifiers if s.map.start <= address < s.map.end), None)
    if sub is None:
        raise BadAddressError(f"gntdev: no grant map covers {address:#x}")
    mm = file.mm
    vpn = address >> mm.page_shift

    def program(pfn: int) -> int | None:
        if sub not in file.notifiers:  # unmapped meanwhile
            return None
        sub.map.pages[vpn] = pfn
        return pfn

    try:
        return file.mirror.fault(sub, lambda: mm.handle_mm_fault(address, write), program, max_tries=2)
    except BusyError:
        return None


def gntdev_release(file: GntdevFile) -> None:
    """``close()``: remove each map's notifier (may sleep), unmap its grants, free the map."""
    for sub in list(file.notifiers):
        interval_notifier_remove(sub)
        with file.mirror.update:
            sub.map.pages.clear()
            file.notifiers.remove(sub)
            file.maps.remove(sub.map)
        kmem.kfree(sub)
