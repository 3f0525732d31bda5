"""Deliberately broken copies of the example gntdev plugin, one bug each (see test_conformance_acceptance.py).

Each class is the example driver with exactly one mistake a driver author
converting to get/put could make; the acceptance tests install them under
their own entry-point names and check that the conformance kit catches each
with the check named for it. Not a test module: the tests copy it next to a
generated ``.dist-info`` and run the kit on it in a fresh interpreter.
"""

from __future__ import annotations

import errno
from typing import ClassVar, cast

from mmu_notifier import kmem
from mmu_notifier.config import DriverConfig
from mmu_notifier.hookspecs import hookimpl
from mmu_notifier.notifier import MMUNotifier
from mmu_notifier.range import Range
from mmu_notifier_gntdev import GntdevConfig, GntdevDriver, GntdevMM, GntdevPriv, GrantMap


class FreeTwice(GntdevDriver):
    """Keeps the v5.3 habit of freeing the per-mm object on the last drop, on top of free_notifier."""

    name: ClassVar[str] = "gntdev-free-twice"

    def gntdev_release(self, priv: GntdevPriv) -> None:
        gmm = priv.gmm
        last = gmm.users == 1
        super().gntdev_release(priv)
        if last:
            kmem.kfree(gmm)  # BUG: the free after put's grace period frees it again


class SkipEnd(GntdevDriver):
    """Its end callback forgets to undo what the start did (the in-flight count stays raised)."""

    name: ClassVar[str] = "gntdev-skip-end"

    @hookimpl
    def invalidate_range_end(self, subscription: MMUNotifier, range: Range) -> None:
        pass  # BUG: gmm.active is never lowered again


class SleepsInNonblock(GntdevDriver):
    """Takes its mutex unconditionally, even in a non-blockable range."""

    name: ClassVar[str] = "gntdev-sleeps"

    @hookimpl
    def invalidate_range_start(self, subscription: MMUNotifier, range: Range) -> int:
        gmm = cast(GntdevMM, subscription)
        with gmm.lock:  # BUG: mutex_lock may sleep; a non-blockable range must trylock and refuse
            hit = [m for priv in gmm.files for m in priv.maps if m.overlaps(range.start, range.end)]
            if hit and not range.blockable:
                return -errno.EAGAIN
            with gmm.range_lock:
                gmm.active += 1
                gmm.seq += 1
            for grant_map in hit:
                self.unmap_if_in_range(grant_map, range.start, range.end)
        return 0


class KeepsStale(GntdevDriver):
    """Unmaps one page too few: the last page of every invalidated overlap stays mapped."""

    name: ClassVar[str] = "gntdev-stale"

    def unmap_if_in_range(self, grant_map: GrantMap, start: int, end: int) -> None:
        page = 1 << grant_map.page_shift
        super().unmap_if_in_range(grant_map, start, end - page)  # BUG: off by one page


class BadHook(GntdevDriver):
    """Implements a hook the core does not know (a typo of invalidate_range_start)."""

    name: ClassVar[str] = "gntdev-bad-hook"

    @hookimpl
    def invalidate_range_begin(self, subscription: MMUNotifier, range: Range) -> int:
        return 0


class RequiredSetting(GntdevConfig):
    """A config whose default is invalid: a field without a default."""

    domain: int


class BadDefaultConfig(GntdevDriver):
    """Its default config does not validate."""

    name: ClassVar[str] = "gntdev-bad-config"
    config_model: ClassVar[type[DriverConfig]] = RequiredSetting


class NoRetry(GntdevDriver):
    """Records a grant mapping without checking that no invalidation raced it (no sequence count)."""

    name: ClassVar[str] = "gntdev-no-retry"

    def map_grant_pages(self, priv: GntdevPriv, address: int, write: bool = False) -> int | None:
        grant_map = next((m for m in priv.maps if m.start <= address < m.end), None)
        if grant_map is None or priv.gmm.active:
            return None
        mm = priv.mm
        if not mm.mmget_not_zero():
            return None
        try:
            pfn = mm.fault(address, write)
        finally:
            mm.mmput()
        with priv.gmm.lock:  # BUG: an invalidation may have started and ended since the fault
            grant_map.pages[address >> mm.page_shift] = pfn
        return pfn
