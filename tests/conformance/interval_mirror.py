"""A device mirror on interval notifiers (nouveau's 5.5 SVM shape) for the kit's interval checks, and a broken copy.

The per-mm device context is a get/put list subscription (its release stops
the device at exit); every ``map_range`` inserts one interval subscription,
whose ``invalidate`` and the device fault go through
:class:`mmu_notifier.interval_pattern.IntervalMirror`. ``detach`` removes its
interval subscriptions, drops their translations, then puts the context.

``KeepsRanges`` forgets to remove its interval subscriptions on detach (the
kit's ``test_interval_nothing_after_remove`` must catch it).
"""

from __future__ import annotations

from typing import Any

import mmu_notifier as mn
from mmu_notifier import exerciser as contract
from mmu_notifier.exerciser import Handle
from mmu_notifier.interval_pattern import IntervalMirror


class MirrorConfig(mn.DriverConfig):
    """How many collisions a device fault tolerates before it gives up (the fault timeout)."""

    max_tries: int = 4


class DeviceContext(mn.MMUNotifier):
    """The device's per-mm state: its page table and the lock the pattern needs."""

    def __init__(self) -> None:
        super().__init__()
        self.mirror = IntervalMirror("svmm.mutex")
        self.ptes: dict[int, int] = {}
        self.dead = False

    def drop(self, start: int, end: int, page_shift: int) -> None:
        """Forget the device translations of ``[start, end)``; caller holds ``mirror.update``."""
        first, last = start >> page_shift, (end - 1) >> page_shift
        for vpn in [v for v in self.ptes if first <= v <= last]:
            del self.ptes[vpn]


class DeviceRange(mn.MMUIntervalNotifier):
    """One mapped range of the device, embedding its interval subscription."""

    def __init__(self, ctx: DeviceContext) -> None:
        super().__init__()
        self.ctx = ctx


class IntervalMirrorDriver(mn.Driver):
    """A correct driver: interval notifiers per range, a get/put context per mm."""

    name = "interval-mirror"
    version = "0.1.0"
    capabilities = frozenset({contract.RELEASE, contract.TRACKS_RANGES, contract.DEVICE_TRANSLATIONS,
                              contract.INTERVAL})
    remove_on_detach = True
    config_model = MirrorConfig

    def __init__(self, config: mn.DriverConfig | None = None) -> None:
        super().__init__(config)
        self.contexts: dict[int, DeviceContext] = {}

    @mn.hookimpl
    def alloc_notifier(self, mm: mn.MM) -> DeviceContext:
        ctx = DeviceContext()
        self.contexts[mm.id] = ctx
        return ctx

    @mn.hookimpl
    def free_notifier(self, subscription: DeviceContext) -> None:
        subscription.ptes.clear()
        mm = subscription.mm
        if mm is not None and self.contexts.get(mm.id) is subscription:
            del self.contexts[mm.id]

    @mn.hookimpl
    def release(self, subscription: DeviceContext, mm: mn.MM) -> None:
        with subscription.mirror.update:
            subscription.dead = True
            subscription.ptes.clear()

    @mn.hookimpl
    def invalidate(self, subscription: DeviceRange, range: mn.Range, cur_seq: int) -> bool:
        ctx = subscription.ctx
        shift = range.mm.page_shift
        return ctx.mirror.invalidate(subscription, range, cur_seq, lambda s, e: ctx.drop(s, e, shift))

    @mn.hookimpl
    def exerciser(self, kernel: mn.Kernel) -> Any:
        return IntervalMirrorExerciser(self, kernel)


class KeepsRanges(IntervalMirrorDriver):
    """Broken: detach leaves its interval subscriptions inserted (and their mm pins taken)."""

    name = "interval-mirror-keeps-ranges"
    remove_on_detach = False


class IntervalMirrorExerciser:
    """The kit's handle on the driver."""

    def __init__(self, driver: IntervalMirrorDriver, kernel: mn.Kernel) -> None:
        self.driver = driver.name
        self.capabilities = type(driver).capabilities
        self._driver = driver
        self._kernel = kernel
        self._ops = kernel.drivers.ops_of(driver)
        config = driver.config
        self._max_tries = config.max_tries if isinstance(config, MirrorConfig) else 4

    def attach(self, mm: mn.MM) -> Handle:
        ctx = mn.get(self._ops, mm)
        return Handle(mm, ctx, state=[])

    def map_range(self, handle: Handle, start: int, end: int) -> None:
        ctx = handle.subscription
        assert isinstance(ctx, DeviceContext)
        sub = DeviceRange(ctx)
        mn.interval_notifier_insert(sub, handle.mm, start, end - start, self._ops)
        handle.state.append(sub)
        handle.ranges.append((start, end))

    def access(self, handle: Handle, address: int, write: bool = False) -> int | None:
        ctx = handle.subscription
        assert isinstance(ctx, DeviceContext)
        sub = next((s for s in handle.state if s.start <= address <= s.last and s.inserted), None)
        if sub is None:
            raise mn.BadAddressError(f"no mapped range of the device covers {address:#x}")
        mm = handle.mm
        vpn = address >> mm.page_shift

        def program(pfn: int) -> int | None:
            if ctx.dead or not sub.inserted:  # exited, or the range is being removed: map nothing
                return None
            ctx.ptes[vpn] = pfn
            return pfn

        return ctx.mirror.fault(sub, lambda: mm.handle_mm_fault(address, write), program, max_tries=self._max_tries)

    def translations(self, mm: mn.MM) -> dict[int, int]:
        ctx = self._driver.contexts.get(mm.id)
        return dict(ctx.ptes) if ctx is not None else {}

    def detach(self, handle: Handle) -> None:
        ctx = handle.subscription
        assert isinstance(ctx, DeviceContext)
        if self._driver.remove_on_detach:
            for sub in handle.state:
                mn.interval_notifier_remove(sub)
        with ctx.mirror.update:
            for start, end in handle.ranges:
                ctx.drop(start, end, handle.mm.page_shift)
        handle.state = []
        mn.put(ctx)

    def unload(self) -> None:
        mn.synchronize(self._kernel)
