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

Times are the process's CPU time (``time.process_time``), not wall time: on a
machine shared with other jobs a wall clock also counts the time this process
waited for a core, which swung the ratio from 0.7x to 2.4x between runs.

Run: ``python bench/bench_scheduler.py [--steps N] [--repeat R]``; exit 1 if the target is missed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from typing import Any

from greenlet import getcurrent, greenlet

from mmu_notifier import sync
from mmu_notifier.explore import Execution, RandomWalk, Scenario, ScenarioInstance

COUNTS = (2, 64, 1024)


def steps_per_second(threads: int, steps: int, record: bool = True) -> float:
    """Steps/s (CPU time) of one execution of ``threads`` threads doing ``steps`` yields in total.

    ``record=False``: an unrecorded run, as the main job's (``bench/bench_scale.py`` measures its floor so).
    """
    per_thread = max(1, steps // threads)

    def body() -> None:
        for _ in range(per_thread):
            sync.yield_now()

    def build() -> ScenarioInstance:
        return ScenarioInstance(threads=[(f"t{i}", body) for i in range(threads)])

    scenario = Scenario(f"yield-{threads}", build, max_steps=10 * steps + 10 * threads)
    execution = Execution(scenario, RandomWalk(0)) if record else Execution(scenario, RandomWalk(0), record=False)
    started = time.process_time()
    outcome = execution.run()
    wall = time.process_time() - started
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
    started = time.process_time()
    pool[0].switch()
    return steps / (time.process_time() - started)


class _AlwaysSwitch(RandomWalk):
    """Picks a thread other than the running one whenever it can: every step is a switch."""

    def choose(self, cands: Any, current: Any, ex: Any) -> Any:
        for t in cands:
            if t is not current:
                return t
        return cands[0]


def switching_steps_per_second(steps: int) -> float:
    """Steps/s of 2 threads that switch at every step (the random walk over 2 switches at half of them)."""

    def body() -> None:
        for _ in range(steps // 2):
            sync.yield_now()

    def build() -> ScenarioInstance:
        return ScenarioInstance(threads=[("a", body), ("b", body)])

    scenario = Scenario("yield-alternate", build, max_steps=10 * steps + 20)
    started = time.process_time()
    outcome = Execution(scenario, _AlwaysSwitch(0)).run()
    wall = time.process_time() - started
    assert outcome.status == "finished", outcome.status
    return len(outcome.trace) / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rates: dict[int, list[float]] = {n: [] for n in COUNTS}
    raw: dict[int, list[float]] = {n: [] for n in COUNTS}
    alternate: list[float] = []
    for _ in range(args.repeat):
        for threads in COUNTS:  # interleaved: every count sees the same machine load
            rates[threads].append(steps_per_second(threads, args.steps))
            raw[threads].append(raw_switches_per_second(threads, args.steps))
        alternate.append(switching_steps_per_second(args.steps))
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
    # per repeat, the two counts ran back to back: their ratio is the fairest one this machine gives
    ratios = [two / many for two, many in zip(rates[2], rates[1024], strict=True)]
    ratio = statistics.median(ratios)
    ok = ratio <= 1.5
    print(f"target: steps/s with 1,024 threads within 1.5x of 2 threads: min {min(ratios):.2f}x, "
          f"median {ratio:.2f}x over {args.repeat} interleaved repeats: {'PASS' if ok else 'MISS'}")
    print(f"the scheduler's own cost per step, 1,024 vs 2 threads: {own[1024] / own[2]:.2f}x")
    alt = statistics.median(alternate)
    print(f"2 threads switching at every step: {alt:,.0f} steps/s median ({base / alt:.2f}x slower than the "
          f"random walk's half switches; 1,024 threads are {alt / statistics.median(rates[1024]):.2f}x slower "
          f"than that: the cost of resuming a thread whose stack and frames are no longer in cache)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
