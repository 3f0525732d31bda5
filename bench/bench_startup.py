"""Start-up (issue 18, target 4): whole processes, timed from outside, interleaved.

Every round runs each command once, in turn, so all see the same machine
load; min and median over ``--repeat`` rounds. Targets:

* ``import mmu_notifier`` and ``mmu-notifier --version`` within 3x of ``python -c pass``;
* ``mmu-notifier explore unregister-no-release --strategy dfs`` (the patch-09 race, found and
  reported) as a whole process faster than frontrun finding the same race
  (``bench/frontrun_patch09.py`` under ``frontrun python``), when frontrun is installed; the
  script says it skipped that comparison otherwise.

Run: ``python bench/bench_startup.py [--repeat 5]``; exit 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def timed(command: list[str], expect: set[int]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in expect:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cli = str(BIN / "mmu-notifier")
    commands: dict[str, tuple[list[str], set[int]]] = {
        "python -c pass": ([sys.executable, "-c", "pass"], {0}),
        "import mmu_notifier": ([sys.executable, "-c", "import mmu_notifier"], {0}),
        "mmu-notifier --version": ([cli, "--version"], {0}),
        # exit 1: the race is found and reported, as it must be
        "mmu-notifier explore (dfs)": ([cli, "explore", "unregister-no-release", "--strategy", "dfs"], {1}),
    }
    frontrun = shutil.which("frontrun", path=str(BIN)) or shutil.which("frontrun")
    if frontrun:
        commands["frontrun, same race"] = ([frontrun, sys.executable, str(HERE / "frontrun_patch09.py")], {0})
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeat):
        for name, (command, expect) in commands.items():
            times[name].append(timed(command, expect))
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"{'command':<30} {'min s':>7} {'median s':>9}")
    for name, values in times.items():
        print(f"{name:<30} {min(values):>7.3f} {med[name]:>9.3f}")
    ok = True
    for name in ("import mmu_notifier", "mmu-notifier --version"):
        ratio = med[name] / med["python -c pass"]
        ok &= ratio <= 3
        print(f"{name} vs python -c pass: {ratio:.2f}x median, {min(times[name]) / min(times['python -c pass']):.2f}x "
              f"min (target <= 3) {'PASS' if ratio <= 3 else 'MISS'}")
    if frontrun:
        ratio = med["mmu-notifier explore (dfs)"] / med["frontrun, same race"]
        ok &= ratio < 1
        mark = 'PASS' if ratio < 1 else 'MISS'
        low = min(times["mmu-notifier explore (dfs)"]) / min(times["frontrun, same race"])
        print(f"explore (dfs) vs frontrun on the same race: {ratio:.2f}x median, {low:.2f}x min (target < 1) {mark}")
    else:
        print("frontrun is not installed: SKIPPED the comparison with frontrun (pip install frontrun)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
