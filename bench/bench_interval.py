"""Interval-notifier performance targets of issue 15, as ratios against baselines measured interleaved in one run.

1. ``interval_read_begin`` + ``interval_read_retry`` on an idle subscription: within 3x
   of a plain call pair (two module-level functions with the same signatures that
   return at once).
2. A one-page invalidation (``invalidate_range_start`` + ``invalidate_range_end``
   through the core's dispatchers) on an mm with 100,000 interval subscriptions, one
   of which it hits: within 2x of the same invalidation on an mm with one
   subscription (also hit).

Each target is measured ``--repeats`` times (default 7), baseline and target
alternating, and the table shows the min and the median of the per-repeat times
and ratios; a target passes when its median ratio is within the limit.

Run: ``python bench/bench_interval.py [--repeats N]`` (exit 1 if a target is missed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable

import mmu_notifier as mn
from mmu_notifier import notifier
from mmu_notifier.range import Event, Range

PAGE = 4096


class Device(mn.Driver):
    """An interval driver whose invalidate only records the collision (``set_seq``)."""

    name = "bench-interval"
    required_hooks = ("invalidate",)

    @mn.hookimpl
    def invalidate(self, subscription: mn.MMUIntervalNotifier, range: mn.Range, cur_seq: int) -> bool:
        mn.interval_set_seq(subscription, cur_seq)
        return True


def per_call(fn: Callable[[], object], number: int) -> float:
    """Seconds per call of one timing run of ``number`` calls."""
    return timeit.timeit(fn, number=number) / number


def plain_begin(sub: object) -> int:
    """Baseline: a plain function with read_begin's signature."""
    return 0


def plain_retry(sub: object, seq: int) -> bool:
    """Baseline: a plain function with read_retry's signature."""
    return False


def reader_pair() -> tuple[Callable[[], object], Callable[[], object]]:
    """(baseline, target) loops of 1,000 begin/retry pairs on an idle subscription."""
    kernel = mn.Kernel(frames=16)
    driver = Device()
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    sub = mn.MMUIntervalNotifier()
    mn.interval_notifier_insert(sub, mm, 0, PAGE, driver)
    loop = range(1000)

    def baseline() -> None:
        begin, retry = plain_begin, plain_retry
        for _ in loop:
            retry(sub, begin(sub))

    def target() -> None:
        begin, retry = mn.interval_read_begin, mn.interval_read_retry
        for _ in loop:
            retry(sub, begin(sub))

    return baseline, target


def invalidation(subscriptions: int) -> Callable[[], object]:
    """A one-page start+end on an mm with ``subscriptions`` one-page interval subscriptions, one of them hit."""
    kernel = mn.Kernel(frames=16)
    driver = Device()
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    for index in range(subscriptions):
        mn.interval_notifier_insert(mn.MMUIntervalNotifier(), mm, index * 2 * PAGE, PAGE, driver)
    page = (subscriptions // 2) * 2 * PAGE
    rng = Range(mm, page, page + PAGE, Event.CLEAR)
    start, end = notifier.invalidate_range_start, notifier.invalidate_range_end

    def one() -> None:
        start(rng)
        end(rng)

    return one


def measure(baseline: Callable[[], object], target: Callable[[], object], number: int,
            repeats: int) -> tuple[list[float], list[float]]:
    """Per-call times of ``repeats`` interleaved runs (baseline first each time)."""
    base, got = [], []
    per_call(baseline, number)  # warm up
    per_call(target, number)
    for _ in range(repeats):
        base.append(per_call(baseline, number))
        got.append(per_call(target, number))
    return base, got


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats per target (>= 3)")
    args = parser.parse_args(argv)
    repeats = max(3, args.repeats)
    ok = True

    def row(name: str, base: list[float], got: list[float], scale: float, limit: float) -> None:
        nonlocal ok
        ratios = [g / b for g, b in zip(got, base, strict=True)]
        median = statistics.median(ratios)
        passed = median <= limit
        ok &= passed
        print(f"{name}\n  baseline min {min(base) * scale:9.1f} ns  median {statistics.median(base) * scale:9.1f} ns"
              f"\n  target   min {min(got) * scale:9.1f} ns  median {statistics.median(got) * scale:9.1f} ns"
              f"\n  ratio    min {min(ratios):9.2f}     median {median:9.2f}     (target <= {limit})  "
              f"{'ok' if passed else 'MISSED'}")

    baseline, target = reader_pair()
    base, got = measure(baseline, target, 200, repeats)
    row("read_begin + read_retry on an idle subscription (per pair) vs a plain call pair", base, got, 1e9 / 1000, 3.0)
    one, many = invalidation(1), invalidation(100_000)
    base, got = measure(one, many, 5000, repeats)
    row("one-page invalidation, 100,000 interval subscriptions vs 1 (one hit each)", base, got, 1e9, 2.0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
