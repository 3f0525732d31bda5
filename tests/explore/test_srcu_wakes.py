"""SRCU grace-period waiters in the explorer: woken by their own grace period; the same runs as eager wakes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mmu_notifier import sync
from mmu_notifier.explore import Execution, RandomWalk, Scenario, ScenarioInstance
from mmu_notifier.explore._scheduler import FINISHED, Outcome
from mmu_notifier.srcu import Srcu


def _grace_periods(threads: int) -> Scenario:
    """Readers, ``synchronize_srcu`` callers of many grace periods, ``call_srcu`` and ``srcu_barrier``."""

    def build() -> ScenarioInstance:
        srcu = Srcu("domain")
        freed: list[int] = []
        run = ScenarioInstance()

        def body(i: int) -> None:
            index = srcu.read_lock()
            sync.yield_now()
            srcu.read_unlock(index)
            if i % 4 == 0:
                srcu.call(lambda: freed.append(i))
                srcu.barrier()
                assert i in freed, "srcu_barrier returned before the callback ran"
            else:
                srcu.synchronize()
            index = srcu.read_lock()
            srcu.read_unlock(index)

        for i in range(threads):
            run.thread(f"t{i}")(lambda i=i: body(i))
        return run

    return Scenario("grace-periods", build)


def _run(threads: int, seed: int, eager: bool) -> Outcome:
    ex = Execution(_grace_periods(threads), RandomWalk(seed), record=True)
    # eager: every leave wakes every waiter of the domain, each rechecked at every step (what records want);
    # otherwise a leave wakes the grace periods it ended, and their waiters run without a recheck
    ex.eager_wakes = eager
    ex._herding = not eager
    return ex.run()


def _steps(out: Outcome) -> list[tuple[int, str, str]]:
    return [(idx, op, getattr(res, "name", "")) for idx, op, res in out.trace]


@settings(max_examples=30, deadline=None)
@given(threads=st.integers(2, 24), seed=st.integers(0, 10_000))
def test_grace_period_channels_give_the_same_run_as_every_leave_wakes(threads: int, seed: int) -> None:
    channels, eager = _run(threads, seed, False), _run(threads, seed, True)
    assert channels.status == eager.status == FINISHED, (channels.problem, eager.problem)
    # the same steps in the same order (the same draws); resources are new objects in each run
    assert _steps(channels) == _steps(eager)
    assert channels.preemptions == eager.preemptions


def test_a_leave_wakes_only_the_waiters_of_the_grace_periods_it_ended() -> None:
    # 100 synchronize_srcu callers of 100 grace periods, held up by readers that leave one at a time: every
    # leave ends one grace period and wakes its one waiter, never the others (no per-step recheck of them).
    waiters = 100

    def build() -> ScenarioInstance:
        srcu = Srcu("domain")
        gate = sync.Completion("go")
        run = ScenarioInstance()

        def waiter() -> None:
            index = srcu.read_lock()  # a reader that holds up every later grace period
            gate.wait()
            srcu.read_unlock(index)

        def syncer() -> None:
            srcu.synchronize()

        for i in range(waiters):
            run.thread(f"r{i}")(waiter)
            run.thread(f"s{i}")(syncer)
        run.thread("go")(gate.complete_all)
        return run

    ex = Execution(Scenario("one-by-one", build), RandomWalk(3), record=False)
    assert not ex.eager_wakes
    most = [0]
    wake = ex.wake

    def spy(resource: object) -> None:
        wake(resource)
        most[0] = max(most[0], len(ex._woken))

    ex.wake = spy  # type: ignore[method-assign]
    out = ex.run()
    assert out.status == FINISHED, out.problem
    # a settled grace-period waiter goes straight to the runnable threads: none waits in the woken list
    assert most[0] == 0
