"""Events per second of the main job, deterministic scheduler vs real threads, 1/10/100 processes.

Ratios are against the 1-process deterministic run measured in the same run.
Run: ``python bench/bench_run.py`` (needs at least one driver plugin installed).
"""

from __future__ import annotations

import sys

from mmu_notifier.workload import runner
from mmu_notifier.workload.default import DEFAULT
from mmu_notifier.workload.model import Process, Workload


def scaled(processes: int) -> Workload:
    """The default workload's worker process, ``processes`` times."""
    worker = DEFAULT.processes[0]
    spec = Process(name=worker.name, count=processes, repeat=1, steps=worker.steps)
    return DEFAULT.model_copy(update={"processes": [spec]})


def main() -> int:
    rows = []
    for processes in (1, 10, 100):
        workload = scaled(processes)
        for mode in ("deterministic", "threads"):
            result = (runner.run_deterministic(workload, seed=0) if mode == "deterministic"
                      else runner.run_threads(workload, threads=4))
            if not result.ok:
                print(f"{mode} with {processes} processes had violations: {result.violations}")
                return 1
            rows.append((processes, mode, result.events, result.wall, result.events / result.wall))
    baseline = rows[0][4]
    print(f"{'processes':>9}  {'mode':<14} {'events':>8} {'seconds':>8} {'events/s':>10}  ratio vs 1-process det.")
    for processes, mode, events, wall, rate in rows:
        print(f"{processes:>9}  {mode:<14} {events:>8} {wall:>8.3f} {rate:>10,.0f}  {rate / baseline:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
