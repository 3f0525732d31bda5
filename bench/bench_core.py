"""Core performance targets of the core issue, as ratios against baselines measured in the same run.

1. ``get`` on an mm already holding 1, 100 and 10,000 other subscriptions: flat
   (10,000 within 1.5x of 1).
2. Per-subscription dispatch of an invalidation, no wrapper installed: within 3x
   of a plain method call, and the same with 1 or 50 drivers installed.
3. A disabled log call on a hot path: within 2x of an ``if`` on a module flag.

Run: ``python bench/bench_core.py`` (prints a table; exit 1 if a target is missed).
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable

import mmu_notifier as mn
from mmu_notifier import notifier
from mmu_notifier.log import LOG
from mmu_notifier.range import RANGE_BLOCKABLE, Event, Range

FLAG = False


class Plain(mn.Driver):
    """A driver whose callbacks do nothing, so only the core's cost is measured."""

    name = "plain"

    @mn.hookimpl
    def alloc_notifier(self, mm: mn.MM) -> mn.MMUNotifier:
        return mn.MMUNotifier()

    @mn.hookimpl
    def free_notifier(self, subscription: mn.MMUNotifier) -> None:
        pass

    @mn.hookimpl
    def invalidate_range_start(self, subscription: mn.MMUNotifier, range: Range) -> int:
        return 0


def best(fn: Callable[[], object], number: int, repeat: int = 5) -> float:
    """Best time per call in seconds over ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def bench_get() -> dict[str, float]:
    times = {}
    for others in (1, 100, 10_000):
        kernel = mn.Kernel()
        filler = [Plain() for _ in range(20)]
        for index, driver in enumerate(filler):
            kernel.drivers.add(driver, name=f"filler{index}")
        target = Plain()
        kernel.drivers.add(target, name="target")
        mm = mn.MM(kernel)
        for index in range(others):
            mn.register(mn.MMUNotifier(), mm, driver=filler[index % len(filler)])
        keep = mn.get(target, mm)

        def get_put(mm: mn.MM = mm, target: Plain = target) -> None:
            mn.put(mn.get(target, mm))

        times[str(others)] = best(get_put, 2000)
        assert keep.users == 1
    return times


class Method:
    def call(self, subscription: object, range: object) -> int:
        return 0


def bench_dispatch(installed: int, subscriptions: int = 1000) -> float:
    kernel = mn.Kernel()
    drivers = [Plain() for _ in range(installed)]
    for index, driver in enumerate(drivers):
        kernel.drivers.add(driver, name=f"d{index}")
    mm = mn.MM(kernel)
    for index in range(subscriptions):
        mn.register(mn.MMUNotifier(), mm, driver=drivers[index % installed])
    rng = Range(mm, 0, 4096, Event.CLEAR, flags=RANGE_BLOCKABLE)
    container = mm.mmu_notifier_mm
    assert container is not None

    def dispatch() -> None:
        notifier._start(rng, container)

    return best(dispatch, 50) / subscriptions


def bench_plain_call(subscriptions: int = 1000) -> float:
    target = Method()
    items = [object()] * subscriptions

    def loop() -> None:
        call = target.call
        for item in items:
            call(item, None)

    return best(loop, 50) / subscriptions


def bench_log() -> tuple[float, float]:
    def disabled_log() -> None:
        for _ in range(1000):
            if LOG.on:
                LOG.event("notifier.get", mm=1)

    def module_flag() -> None:
        for _ in range(1000):
            if FLAG:
                pass

    return best(disabled_log, 200) / 1000, best(module_flag, 200) / 1000


def main() -> int:
    ok = True

    def row(name: str, value: float, baseline: float, limit: float) -> None:
        nonlocal ok
        ratio = value / baseline
        passed = ratio <= limit
        ok &= passed
        mark = "ok" if passed else "MISSED"
        print(f"{name:<52} {value * 1e9:10.1f} ns  ratio {ratio:5.2f} (target <= {limit})  {mark}")

    gets = bench_get()
    for others, value in gets.items():
        row(f"get+put, {others} other subscriptions (vs 1)", value, gets["1"], 1.5)
    plain = bench_plain_call()
    print(f"{'baseline: plain method call':<52} {plain * 1e9:10.1f} ns")
    one = bench_dispatch(1)
    many = bench_dispatch(50)
    row("dispatch per subscription, 1 driver installed", one, plain, 3.0)
    row("dispatch per subscription, 50 drivers installed", many, plain, 3.0)
    row("dispatch, 50 drivers vs 1 driver installed", many, one, 1.3)
    disabled, flag = bench_log()
    row("disabled log call (vs if on a module flag)", disabled, flag, 2.0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
