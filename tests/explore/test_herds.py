"""Herds: waiters of a shared wait woken as one list give the same runs as per-thread wakes, in O(1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmu_notifier import sync
from mmu_notifier.explore import Execution, RandomWalk, Scenario, ScenarioInstance
from mmu_notifier.explore._scheduler import FINISHED, Outcome


def _contended(threads: int) -> Scenario:
    """Threads that fight over a mutex, an rw-semaphore (readers and writers), a spinlock and a completion."""

    def build() -> ScenarioInstance:
        mutex, rwsem, spin = sync.Mutex("global"), sync.RWSemaphore("rw"), sync.SpinLock("spin")
        done = sync.Completion("started")
        srcu_like = sync.WaitQueue("wq")
        state = {"in": 0, "count": 0}
        run = ScenarioInstance()

        def body(i: int) -> None:
            if i == 0:
                done.complete_all()
            else:
                done.wait()
            with mutex:
                state["in"] += 1
                assert state["in"] == 1, "two threads inside the mutex"
                sync.yield_now()
                state["in"] -= 1
            if i % 3:
                rwsem.down_read()
                sync.yield_now()
                rwsem.up_read()
            else:
                rwsem.down_write()
                sync.yield_now()
                rwsem.up_write()
            with spin:
                state["count"] += 1
            srcu_like.wake_up_all()
            srcu_like.wait_event(lambda: state["count"] >= 1)

        for i in range(threads):
            run.thread(f"t{i}")(lambda i=i: body(i))
        run.check(lambda: None if state["count"] == threads else (_ for _ in ()).throw(AssertionError("lost")))
        return run

    return Scenario("herds", build)


def _run(threads: int, seed: int, herding: bool) -> Outcome:
    ex = Execution(_contended(threads), RandomWalk(seed), record=True)
    ex._herding = herding  # the per-thread wakes of an execution with eager wakes, without their records
    return ex.run()


def _steps(out: Outcome) -> list[tuple[int, str, str]]:
    return [(idx, op, getattr(res, "name", "")) for idx, op, res in out.trace]


@settings(max_examples=30, deadline=None)
@given(threads=st.integers(2, 24), seed=st.integers(0, 10_000))
def test_herds_give_the_same_run_as_per_thread_wakes(threads: int, seed: int) -> None:
    herded, single = _run(threads, seed, True), _run(threads, seed, False)
    assert herded.status == single.status == FINISHED
    # the same steps in the same order (the same draws); resources are new objects in each run
    assert _steps(herded) == _steps(single)
    assert herded.preemptions == single.preemptions
    assert [t.state for t in herded.threads] == [t.state for t in single.threads]


@pytest.mark.parametrize("herding", [True, False])
def test_a_herd_moves_as_one_list(herding: bool) -> None:
    # 200 threads queue on one mutex; every unlock wakes them all. With herds no waiter goes through the
    # per-thread woken list (whose recheck walks every woken thread); without, the whole herd does.
    def build() -> ScenarioInstance:
        mutex = sync.Mutex("global")
        run = ScenarioInstance()

        def body() -> None:
            with mutex:
                sync.yield_now()

        for i in range(200):
            run.thread(f"t{i}")(body)
        return run

    ex = Execution(Scenario("herd", build), RandomWalk(1), record=False)
    ex._herding = herding
    most = {"woken": 0, "herd": 0}
    wake = ex.wake

    def spy(resource: object) -> None:
        wake(resource)
        most["woken"] = max(most["woken"], len(ex._woken))
        most["herd"] = max([most["herd"], *(len(members) for _, members, _ in ex._herds.values())])

    ex.wake = spy  # type: ignore[method-assign]
    out = ex.run()
    assert out.status == FINISHED
    if herding:
        assert most == {"woken": 0, "herd": most["herd"]} and most["herd"] > 100
    else:
        assert most["woken"] > 100 and most["herd"] == 0
