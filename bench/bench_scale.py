"""Main-job scale (issue 18, target 1): events/s, growth exponent and peak memory per process.

Each measurement is one ``mmu-notifier run``-equivalent in its own Python
process (so its peak RSS is its own): the default workload's worker process
``N`` times, deterministic (seed 0, no timeline) and on 8 OS threads. The
baseline is the same measurement at 100 processes of an older core
(``--baseline-ref``, default the commit before issue 18's work; extracted with
``git archive`` and put first on ``PYTHONPATH``), run interleaved with the new
one in every repeat, so both see the same machine load. Events/s are given
per wall second and per CPU second of the run (the machine is shared: CPU time
is the steadier of the two); ratios use the medians of ``--repeat`` repeats.

Targets: events/s at 1,000 processes at least 8x the baseline's at 100; growth
exponent (log of time ratio over log of event ratio, 100 to 3,000 processes,
CPU time) at most 1.05 in both modes.

Run: ``python bench/bench_scale.py [--sizes 100,1000,3000] [--repeat 3] [--baseline-ref REF]``
(``--one N MODE`` is the per-process worker; ``--no-baseline`` skips the old core).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE_REF = "b286b09"  # main after the house step, before issue 18
#: the drivers measured (in both cores) and where the baseline's own copies of them live
DRIVERS = ("amdkfd", "gntdev", "gru", "hmm")
PLUGIN_DIRS = ("plugins/amdkfd", "plugins/gru", "plugins/hmm", "examples/gntdev")


def one(processes: int, mode: str) -> dict[str, float]:
    """Run one scaled workload here; what the parent prints."""
    from mmu_notifier.workload import runner
    from mmu_notifier.workload.default import DEFAULT
    from mmu_notifier.workload.model import Process

    worker = DEFAULT.processes[0]
    specs, left = [], processes
    while left:  # a process spec holds at most 1,000 processes
        count = min(left, 1000)
        specs.append(Process(name=worker.name, count=count, repeat=1, steps=worker.steps))
        left -= count
    # the drivers both cores have (the old core cannot load plugins written after it)
    workload = DEFAULT.model_copy(update={"processes": specs, "drivers": list(DRIVERS)})
    cpu = time.process_time()
    if mode == "deterministic":
        try:
            result = runner.run_deterministic(workload, 0, record=False)  # type: ignore[call-arg]
        except TypeError:  # an older core records every step
            result = runner.run_deterministic(workload, 0)
    else:
        result = runner.run_threads(workload, 8)
    cpu = time.process_time() - cpu
    if not result.ok:
        raise SystemExit(f"{mode} run of {processes} processes had violations: {result.violations[:3]}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"events": result.events, "wall": result.wall, "cpu": cpu, "rss_mb": rss_mb}


def measure(processes: int, mode: str, src: Path | None) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:  # the old core and the old plugins first on the path
        paths = [src / "core", *(src / d for d in PLUGIN_DIRS)]
        env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(processes), mode],
        capture_output=True, text=True, env=env, check=False,
    )
    if out.returncode:
        raise SystemExit(f"run of {processes} {mode} failed:\n{out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def baseline_source(ref: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "core", *PLUGIN_DIRS], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, metavar=("N", "MODE"))
    parser.add_argument("--sizes", default="100,1000,3000")
    parser.add_argument("--modes", default="deterministic,threads")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1])))
        return 0
    sizes = [int(n) for n in args.sizes.split(",")]
    modes = args.modes.split(",")
    runs: dict[tuple[str, int, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = None if args.no_baseline else baseline_source(args.baseline_ref, Path(tmp))
        for _ in range(args.repeat):
            if base is not None:
                runs.setdefault(("baseline", 100, "deterministic"), []).append(measure(100, "deterministic", base))
            for n in sizes:
                for mode in modes:
                    runs.setdefault(("new", n, mode), []).append(measure(n, mode, None))

    def med(key: tuple[str, int, str], field: str) -> float:
        return statistics.median(r[field] for r in runs[key])

    print(f"{'core':<9} {'processes':>9} {'mode':<14} {'events':>7} {'wall s (min/med)':>17} "
          f"{'ev/s wall':>10} {'ev/s cpu':>9} {'peak MB':>8} {'MB/proc':>8}")
    for (core, n, mode), rs in runs.items():
        events = rs[0]["events"]
        walls = sorted(r["wall"] for r in rs)
        rss = med((core, n, mode), "rss_mb")
        # per process: the peak's growth over the smallest run of the same core and mode
        smallest = min(k[1] for k in runs if k[0] == core and k[2] == mode)
        per = (rss - med((core, smallest, mode), "rss_mb")) / (n - smallest) if n > smallest else float("nan")
        print(f"{core:<9} {n:>9} {mode:<14} {events:>7.0f} {walls[0]:>8.2f}/{statistics.median(walls):<8.2f} "
              f"{events / statistics.median(walls):>10,.0f} {events / med((core, n, mode), 'cpu'):>9,.0f} "
              f"{rss:>8.1f} {per:>8.3f}")
    ok = True
    if ("baseline", 100, "deterministic") in runs and ("new", 1000, "deterministic") in runs:
        for field in ("wall", "cpu"):
            base, new = ("baseline", 100, "deterministic"), ("new", 1000, "deterministic")
            base_rate = runs[base][0]["events"] / med(base, field)
            new_rate = runs[new][0]["events"] / med(new, field)
            ratio = new_rate / base_rate
            ok &= ratio >= 8 or field == "wall"
            print(f"events/s ({field}) at 1,000 processes vs the baseline at 100: {ratio:.2f}x (target >= 8)")
        # the cores count events differently (issue 16's summary counts every callback), so the same work
        # (the same processes doing the same steps) is compared too: processes per CPU second
        new_rate = 1000 / med(("new", 1000, "deterministic"), "cpu")
        same_work = new_rate / (100 / med(("baseline", 100, "deterministic"), "cpu"))
        print(f"same work (processes per CPU second) at 1,000 processes vs the baseline at 100: {same_work:.2f}x")
    low, high = min(sizes), max(sizes)
    for mode in modes:
        if low == high:
            break
        lo, hi = ("new", low, mode), ("new", high, mode)
        exponent = math.log(med(hi, "cpu") / med(lo, "cpu")) / math.log(runs[hi][0]["events"] / runs[lo][0]["events"])
        ok &= exponent <= 1.05
        print(f"growth exponent {mode} {low} -> {high} processes (CPU time): {exponent:.2f} (target <= 1.05)")
    print("targets met" if ok else "targets MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
