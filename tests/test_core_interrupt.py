"""Ctrl-C is never a callback's bug: SRCU callbacks and work items hand their exceptions to ``on_error``
(the kernel records a bug and goes on), but ``KeyboardInterrupt`` (and any ``BaseException`` that is no
``Exception``) propagates, so an interrupted exploration stops instead of reporting a made-up finding
(seen with ``explore --jobs 2``: a Ctrl-C inside an SRCU callback became a "leak", exit 70)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mmu_notifier.explore import Scenario, ScenarioInstance, explore
from mmu_notifier.srcu import Srcu
from mmu_notifier.workqueue import Work, Workqueue


def interrupt() -> None:
    raise KeyboardInterrupt


def fails() -> None:
    raise ValueError("a callback's bug")


def scenario(queue: Callable[[Callable[[], None], list[BaseException]], None], fn: Callable[[], None],
             errors: list[BaseException]) -> Scenario:
    def build() -> ScenarioInstance:
        return ScenarioInstance(threads=[("user", lambda: queue(fn, errors))])

    return Scenario("interrupt", build)


def via_srcu(fn: Callable[[], None], errors: list[BaseException]) -> None:
    srcu = Srcu("test_srcu", on_error=errors.append)
    srcu.call(fn)
    srcu.barrier()


def via_workqueue(fn: Callable[[], None], errors: list[BaseException]) -> None:
    wq = Workqueue("test_wq", on_error=errors.append)
    wq.queue_work(Work(fn, name="work"))
    wq.drain()


@pytest.mark.parametrize("queue", [via_srcu, via_workqueue], ids=["srcu", "workqueue"])
def test_keyboard_interrupt_in_a_callback_stops_the_exploration(queue) -> None:
    errors: list[BaseException] = []
    with pytest.raises(KeyboardInterrupt):
        explore(scenario(queue, interrupt, errors), "random", budget=5)
    assert errors == []  # not recorded as the callback's bug


@pytest.mark.parametrize("queue", [via_srcu, via_workqueue], ids=["srcu", "workqueue"])
def test_an_exception_in_a_callback_still_goes_to_on_error(queue) -> None:
    errors: list[BaseException] = []
    explore(scenario(queue, fails, errors), "random", budget=3, stop_on_first=False)
    assert errors and all(isinstance(e, ValueError) for e in errors)



def test_ctrl_c_inside_a_model_thread_stops_the_execution_and_is_not_lost() -> None:
    """SIGINT while a model thread holds a mutex: its unwinding releases the mutex (a scheduling point).

    Had the execution gone on choosing there, the other thread would run, the teardown's ``Abandon`` would
    replace the half-propagated interrupt, and the run would end as if nothing happened (seen: Ctrl-C during
    ``explore --all --jobs 2`` became "the scenario is not deterministic", exit 70).
    """
    import os
    import signal

    from mmu_notifier import sync
    from mmu_notifier.explore import Execution, RandomWalk, _scheduler

    state = {"held": False}

    def build() -> ScenarioInstance:
        mutex = sync.Mutex("m")
        run = ScenarioInstance()

        def holder() -> None:
            with mutex:
                state["held"] = True
                os.kill(os.getpid(), signal.SIGINT)  # delivered at the next bytecode, inside the section
                sync.yield_now()

        def other() -> None:
            while not state["held"]:
                sync.yield_now()
            with mutex:  # gets in only if the interrupted holder's release let the execution choose it
                raise RuntimeError("the run went on after Ctrl-C")

        run.thread("holder")(holder)
        run.thread("other")(other)
        return run

    previous = signal.signal(signal.SIGINT, _scheduler._interrupt)  # what the explorer installs over the default
    try:
        for seed in range(8):
            state["held"] = False
            with pytest.raises(KeyboardInterrupt):
                Execution(Scenario("ctrl-c", build), RandomWalk(seed)).run()
            assert _scheduler._running is None  # the execution is over
            assert isinstance(sync.backend(), sync.ThreadBackend)  # and its backend put back
    finally:
        signal.signal(signal.SIGINT, previous)
