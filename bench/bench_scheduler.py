"""Scheduler steps per second with 2 and 1,024 live model threads (issue 18, target 2).

Every model thread loops on ``sync.yield_now()`` (one scheduling point per
iteration) under the seeded random walk, so each step is a decision among all
live threads and, almost always, a greenlet switch. The cost of a step must not
depend on how many threads are live: steps/s with 1,024 threads within 1.5x of
2 threads. The thread counts are measured interleaved, min and median of
``--repeat`` runs each (the machine is shared and noisy).

Run: ``python bench/bench_scheduler.py [--steps N] [--repeat R]``; exit 1 if the target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rates: dict[int, list[float]] = {n: [] for n in COUNTS}
    for _ in range(args.repeat):
        for threads in COUNTS:  # interleaved: every count sees the same machine load
            rates[threads].append(steps_per_second(threads, args.steps))
    print(f"{'threads':>7} {'steps/s max':>12} {'steps/s median':>15}  slowdown vs 2 (median)")
    base = statistics.median(rates[2])
    for threads in COUNTS:
        med = statistics.median(rates[threads])
        print(f"{threads:>7} {max(rates[threads]):>12,.0f} {med:>15,.0f}  {base / med:5.2f}")
    ratio = base / statistics.median(rates[1024])
    ok = ratio <= 1.5
    print(f"target: 1,024 threads within 1.5x of 2 threads: {ratio:.2f}x {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
