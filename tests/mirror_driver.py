"""A minimal, correct mirroring driver with an exerciser, for the core's own workload tests.

It is also the base of the deliberately broken plugins of ``broken_plugins.py``,
which copies this file next to them (so keep it importable on its own).

Its device keeps a translation table per mm; an invalidation drops the range
and holds new translations back until its end, as a real secondary MMU must.
"""

from __future__ import annotations

import mmu_notifier as mn
from mmu_notifier import exerciser, sync


class MirrorSub(mn.MMUNotifier):
    def __init__(self) -> None:
        super().__init__()
        self.lock = sync.SpinLock("mirror.lock")
        self.translations: dict[int, int] = {}
        self.active = 0


class MirrorDriver(mn.Driver):
    name = "mirror"
    version = "0.1"
    capabilities = frozenset({exerciser.DEVICE_TRANSLATIONS})

    @mn.hookimpl
    def alloc_notifier(self, mm):
        return MirrorSub()

    @mn.hookimpl
    def free_notifier(self, subscription):
        subscription.translations.clear()

    @mn.hookimpl
    def invalidate_range_start(self, subscription, range):
        with subscription.lock:
            subscription.active += 1
            first, last = range.start >> range.mm.page_shift, range.end >> range.mm.page_shift
            for vpn in [v for v in subscription.translations if first <= v < last]:
                del subscription.translations[vpn]
        return 0

    @mn.hookimpl
    def invalidate_range_end(self, subscription, range):
        with subscription.lock:
            subscription.active -= 1

    @mn.hookimpl
    def release(self, subscription, mm):
        with subscription.lock:
            subscription.translations.clear()

    @mn.hookimpl
    def exerciser(self, kernel):
        return MirrorExerciser(self, kernel)


class MirrorExerciser:
    """Drives a :class:`MirrorDriver`, or a subclass under its own name (the broken test plugins derive one)."""

    def __init__(self, driver: MirrorDriver, kernel: mn.Kernel) -> None:
        self.plugin = driver
        self.driver = driver.name
        self.capabilities = type(driver).capabilities
        self.kernel = kernel
        self.subs: dict[int, MirrorSub] = {}

    def attach(self, mm):
        sub = mn.get(self.plugin, mm)
        self.subs[mm.id] = sub
        return exerciser.Handle(mm, sub)

    def map_range(self, handle, start, end):
        handle.ranges.append((start, end))

    def access(self, handle, address, write=False):
        mm, sub = handle.mm, handle.subscription
        if not mm.mmget_not_zero():
            return None
        try:
            mm.mmap_lock.down_read()
            try:
                pfn = mm.handle_mm_fault(address, write)
                with sub.lock:
                    if sub.active:
                        return None
                    sub.translations[address >> mm.page_shift] = pfn
                    return pfn
            finally:
                mm.mmap_lock.up_read()
        finally:
            mm.mmput()

    def translations(self, mm):
        sub = self.subs.get(mm.id)
        if sub is None or mn.kmem.is_freed(sub):
            return {}
        return dict(sub.translations)

    def detach(self, handle):
        with handle.subscription.lock:
            if handle.subscription.users == 1:
                handle.subscription.translations.clear()
        mn.put(handle.subscription)

    def unload(self):
        mn.synchronize(self.kernel)
