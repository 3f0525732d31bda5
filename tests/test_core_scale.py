"""Scale of the main job (issues 16 item 6 and 18): thousands of model threads, flat memory, same runs."""

from __future__ import annotations

import sys

import pytest

from mmu_notifier import sync
from mmu_notifier.explore import Execution, RandomWalk, Scenario, ScenarioInstance
from mmu_notifier.workload import runner, summary
from mmu_notifier.workload.default import DEFAULT
from mmu_notifier.workload.model import Process, Workload


def scaled(processes: int) -> Workload:
    """The default workload's worker process, ``processes`` times (specs of at most 1,000)."""
    worker = DEFAULT.processes[0]
    specs = []
    while processes:
        count = min(processes, 1000)
        specs.append(Process(name=worker.name, count=count, repeat=1, steps=worker.steps))
        processes -= count
    return DEFAULT.model_copy(update={"processes": specs})


def test_thousands_of_threads_start_within_a_small_recursion_limit() -> None:
    # Every thread is started by the hub, not by the thread that chose it: a chain of starts
    # inside one another inherited each other's depth and hit RecursionError near 1,000 processes.
    ran: list[int] = []

    def body(i: int) -> None:
        sync.yield_now()
        ran.append(i)

    def build() -> ScenarioInstance:
        return ScenarioInstance(threads=[(f"t{i}", lambda i=i: body(i)) for i in range(2000)])

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        outcome = Execution(Scenario("many-threads", build, max_steps=100_000), RandomWalk(1)).run()
    finally:
        sys.setrecursionlimit(old)
    assert outcome.status == "finished", outcome.problem
    assert sorted(ran) == list(range(2000))


def test_an_unrecorded_run_is_the_same_run() -> None:
    recorded = runner.run_deterministic(DEFAULT, seed=5)
    counted = runner.run_deterministic(DEFAULT, seed=5, record=False)
    assert counted.scheduler_steps == recorded.scheduler_steps > 0
    assert recorded.timeline is not None and counted.timeline is None
    first, second = summary.document(recorded), summary.document(counted)
    for doc in (first, second):
        for key in ("wall_seconds", "events_per_second"):
            doc.pop(key, None)
    assert first == second


def test_the_step_bound_grows_with_the_processes() -> None:
    assert runner.max_steps(scaled(10)) == runner.MAX_STEPS
    assert runner.max_steps(scaled(10_000)) == 10_000 * runner.MAX_STEPS_PER_PROCESS


def _explain(result: runner.RunResult) -> str:
    """What a failing run did, as ``mmu-notifier run`` prints it: failed steps, every violation of the run and of
    each driver, the traceback of each driver's fault and of each exception that ended a process."""
    return f"failed steps: {result.failed_steps}\n" + summary.render(summary.document(result))


def _assert_clean(result: runner.RunResult) -> None:
    assert result.ok, _explain(result)
    assert result.violations == [], _explain(result)
    assert result.failed_steps == 0, _explain(result)
    for name, stats in result.drivers.items():
        assert not stats.violations, _explain(result)
        assert stats.allocated == stats.freed, (name, stats.allocated, stats.freed, _explain(result))


@pytest.mark.slow
def test_ten_thousand_processes_deterministic() -> None:
    result = runner.run_deterministic(scaled(10_000), seed=0, record=False)
    assert result.steps >= 10_000 * len(DEFAULT.processes[0].steps), _explain(result)
    _assert_clean(result)


@pytest.mark.slow
def test_ten_thousand_processes_on_eight_threads() -> None:
    result = runner.run_threads(scaled(10_000), threads=8)
    assert result.steps >= 10_000 * len(DEFAULT.processes[0].steps), _explain(result)
    _assert_clean(result)
