"""Scheduler steps per second with 2 and 1,024 live model threads (issue 18, target 2).

Every model thread loops on ``sync.yield_now()`` (one scheduling point per
iteration) under the seeded random walk, so each step is a decision among all
live threads and, almost always, a greenlet switch. The cost of a step must not
depend on how many threads are live: steps/s with 1,024 threads within 1.5x of
2 threads. The thread counts are measured interleaved, min and median of
``--repeat`` runs each (the machine is shared and noisy).

Same run, same pattern: the floor of the hardware, raw greenlets switching to
a uniformly random one of N (no scheduler at all). A random walk over 1,024
threads touches a cold stack at almost every step where 2 threads stay warm,
and the raw switch alone slows by that factor; the scheduler's own cost per
step (the step's time minus the raw switch's) is printed beside it.

Run: ``python bench/bench_scheduler.py [--steps N] [--repeat R]``; exit 1 if the target is missed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from greenlet import getcurrent, greenlet

from mmu_notifier import sync
from mmu_notifier.explore import Execution, RandomWalk, Scenario, ScenarioInstance

COUNTS = (2, 64, 1024)


def steps_per_second(threads: int, steps: int) -> float:
    """Steps/s of one execution of ``threads`` threads doing ``steps`` yields in total."""
    per_thread = max(1, steps // threads)

    def body() -> None:
        for _ in range(per_thread):
            sync.yield_now()

    def build() -> ScenarioInstance:
        return ScenarioInstance(threads=[(f"t{i}", body) for i in range(threads)])

    scenario = Scenario(f"yield-{threads}", build, max_steps=10 * steps + 10 * threads)
    started = time.perf_counter()
    outcome = Execution(scenario, RandomWalk(0)).run()
    wall = time.perf_counter() - started
    assert outcome.status == "finished", outcome.status
    return len(outcome.trace) / wall


def raw_switches_per_second(threads: int, steps: int) -> float:
    """Raw greenlets, each switching to a uniformly random one of ``threads`` (the floor)."""
    draw = random.Random(0).random
    hub = getcurrent()
    pool: list[greenlet] = []
    left = [steps]

    def body() -> None:
        while left[0] > 0:
            left[0] -= 1
            pool[int(draw() * threads)].switch()
        hub.switch()

    pool.extend(greenlet(body, hub) for _ in range(threads))
    started = time.perf_counter()
    pool[0].switch()
    return steps / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rates: dict[int, list[float]] = {n: [] for n in COUNTS}
    raw: dict[int, list[float]] = {n: [] for n in COUNTS}
    for _ in range(args.repeat):
        for threads in COUNTS:  # interleaved: every count sees the same machine load
            rates[threads].append(steps_per_second(threads, args.steps))
            raw[threads].append(raw_switches_per_second(threads, args.steps))
    print(f"{'threads':>7} {'steps/s max':>12} {'steps/s median':>15} {'slowdown vs 2':>14} "
          f"{'raw switch slowdown':>20} {'scheduler ns/step':>18}")
    base = statistics.median(rates[2])
    raw_base = statistics.median(raw[2])
    own: dict[int, float] = {}
    for threads in COUNTS:
        med = statistics.median(rates[threads])
        raw_med = statistics.median(raw[threads])
        own[threads] = (1 / med - 1 / raw_med) * 1e9
        print(f"{threads:>7} {max(rates[threads]):>12,.0f} {med:>15,.0f} {base / med:>14.2f} "
              f"{raw_base / raw_med:>20.2f} {own[threads]:>18.0f}")
    ratio = base / statistics.median(rates[1024])
    ok = ratio <= 1.5
    print(f"target: 1,024 threads within 1.5x of 2 threads: {ratio:.2f}x {'ok' if ok else 'MISSED'}")
    print(f"the scheduler's own cost per step, 1,024 vs 2 threads: {own[1024] / own[2]:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
