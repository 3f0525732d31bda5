"""The deterministic backend: steps, blocking, wake-ups, timeouts, daemons, finale, teardown."""

from __future__ import annotations

import pytest

from mmu_notifier import sync
from mmu_notifier.explore import Execution, Kind, RandomWalk, Scenario, ScenarioInstance, Violation, explore
from mmu_notifier.explore._scheduler import FINISHED, STEP_BOUND
from mmu_notifier.srcu import Srcu


def run_once(build, seed: int = 0, max_steps: int | None = None):  # type: ignore[no-untyped-def]
    return Execution(Scenario("t", build), RandomWalk(seed), max_steps).run()


def test_a_thread_without_points_is_one_step() -> None:
    def build() -> ScenarioInstance:
        run = ScenarioInstance()
        run.thread("only")(lambda: None)
        return run

    out = run_once(build)
    assert out.status == FINISHED
    assert out.trace == [(0, "start", None)]
    assert out.problem is None


def test_mutual_exclusion_holds_in_every_schedule() -> None:
    inside: list[int] = []

    def build() -> ScenarioInstance:
        lock = sync.Mutex("m")
        state = {"in": 0, "max": 0}
        run = ScenarioInstance()

        def body() -> None:
            for _ in range(2):
                with lock:
                    state["in"] += 1
                    state["max"] = max(state["max"], state["in"])
                    sync.yield_now()
                    state["in"] -= 1

        run.thread("A")(body)
        run.thread("B")(body)
        run.check(lambda: inside.append(state["max"]))
        return run

    result = explore(Scenario("mutex", build), "dfs", budget=500)
    assert result.complete and not result.failed
    assert set(inside) == {1}


def _lost_update() -> ScenarioInstance:
    counter = [0]
    run = ScenarioInstance()

    def inc() -> None:
        seen = counter[0]
        sync.yield_now()
        counter[0] = seen + 1

    run.thread("A")(inc)
    run.thread("B")(inc)

    @run.check
    def both_counted() -> None:
        if counter[0] != 2:
            raise Violation(f"counter is {counter[0]}, expected 2")

    return run


def test_declared_invariant_failure_is_reported() -> None:
    result = explore(Scenario("lost-update", _lost_update), "dfs", budget=100)
    assert [f.problem.kind for f in result.findings] == [Kind.INVARIANT]
    assert "counter is 1" in result.findings[0].problem.message


def test_completion_wait_blocks_until_complete() -> None:
    order: list[str] = []

    def build() -> ScenarioInstance:
        done = sync.Completion("done")
        run = ScenarioInstance()

        @run.thread("waiter")
        def waiter() -> None:
            done.wait()
            order.append("woken")

        @run.thread("signaller")
        def signaller() -> None:
            order.append("signal")
            done.complete()

        return run

    for seed in range(20):
        order.clear()
        assert run_once(build, seed).status == FINISHED
        assert order == ["signal", "woken"]


def test_waiting_for_nothing_is_a_deadlock_without_owner() -> None:
    def build() -> ScenarioInstance:
        never = sync.Completion("never")
        run = ScenarioInstance()
        run.thread("stuck")(never.wait)
        return run

    out = run_once(build)
    assert out.problem is not None and out.problem.kind is Kind.DEADLOCK
    assert "no owner" in out.problem.details["stuck"]


def test_lost_wake_up_is_named() -> None:
    def build() -> ScenarioInstance:
        wq = sync.WaitQueue("wq")
        flag = [False]
        run = ScenarioInstance()
        run.thread("waiter")(lambda: wq.wait_event(lambda: flag[0]))

        @run.thread("setter")
        def setter() -> None:
            sync.yield_now()
            flag[0] = True  # forgets wq.wake_up_all()

        return run

    problems = [run_once(build, seed).problem for seed in range(10)]
    lost = [p for p in problems if p is not None]
    assert lost and all("lost wake-up" in p.message for p in lost)


def test_timed_wait_expires_only_when_nothing_else_can_run() -> None:
    results: list[object] = []

    def build() -> ScenarioInstance:
        wq = sync.WaitQueue("wq")
        run = ScenarioInstance()
        run.thread("waiter")(lambda: results.append(wq.wait_event(lambda: False, timeout=1.0)))
        run.thread("other")(lambda: [sync.yield_now() for _ in range(3)])
        return run

    out = run_once(build)
    assert out.status == FINISHED
    assert results == [False]
    assert out.trace[-1][1] == "wait_event"  # the expiry is the last step: nobody else had work


def test_thread_exiting_with_a_lock_held_is_reported() -> None:
    def build() -> ScenarioInstance:
        lock = sync.Mutex("leaky")
        run = ScenarioInstance()
        run.thread("A")(lock.lock)
        return run

    out = run_once(build)
    assert out.problem is not None and out.problem.kind is Kind.HELD_AT_EXIT
    assert "mutex leaky" in out.problem.message


def test_exception_in_a_thread_names_type_and_site() -> None:
    def build() -> ScenarioInstance:
        run = ScenarioInstance()

        @run.thread("A")
        def boom() -> None:
            sync.yield_now()
            raise KeyError("missing")

        return run

    out = run_once(build)
    assert out.problem is not None and out.problem.kind is Kind.EXCEPTION
    assert out.problem.message.startswith("KeyError")
    assert out.problem.thread == "A"
    assert "in boom" in out.problem.details["site"]


def test_step_bound_stops_a_livelock() -> None:
    def build() -> ScenarioInstance:
        run = ScenarioInstance()

        @run.thread("spinner")
        def spin() -> None:
            while True:
                sync.yield_now()

        return run

    result = explore(Scenario("livelock", build, max_steps=50), "random", budget=3)
    assert result.stats.step_bound == 3 and result.stats.steps_max == 50
    assert run_once(build, max_steps=50).status == STEP_BOUND


def test_abandoned_threads_unwind_with_the_backend_installed() -> None:
    unwound: list[bool] = []

    def build() -> ScenarioInstance:
        a, b = sync.Mutex("a"), sync.Mutex("b")
        run = ScenarioInstance()

        def take(first: sync.Mutex, second: sync.Mutex) -> None:
            try:
                with first, second:
                    pass
            finally:
                unwound.append(isinstance(sync.backend(), Execution))

        run.thread("A")(lambda: take(a, b))
        run.thread("B")(lambda: take(b, a))
        return run

    result = explore(Scenario("abba", build), "dfs", budget=50, minimise_budget=0, reproduce=0)
    assert result.bugs[0].problem.kind is Kind.DEADLOCK
    assert unwound and all(unwound)
    assert not isinstance(sync.backend(), Execution)


def test_srcu_callbacks_run_on_a_daemon_after_the_grace_period_and_finale_runs_last() -> None:
    events: list[str] = []

    def build() -> ScenarioInstance:
        srcu = Srcu("test_srcu")
        run = ScenarioInstance()

        @run.thread("reader")
        def reader() -> None:
            with srcu.read_section():
                sync.yield_now()
                events.append("reader leaves")

        @run.thread("updater")
        def updater() -> None:
            srcu.call(lambda: events.append("callback"))

        run.finale = lambda: (srcu.barrier(), events.append("finale"))
        return run

    for seed in range(30):
        events.clear()
        out = run_once(build, seed)
        assert out.status == FINISHED, out.problem
        assert events[-1] == "finale"
        assert any(t.daemon and t.name == "test_srcu-callbacks" for t in out.threads)
        if events.index("callback") < events.index("reader leaves"):
            # the callback may only overtake a reader that entered after call_srcu
            reader_enter = next(i for i, s in enumerate(out.trace) if s[1] == "srcu_read_lock")
            call = next(i for i, s in enumerate(out.trace) if s[1] == "call_srcu")
            assert reader_enter > call


def test_blocking_outside_a_model_thread_is_refused() -> None:
    def build() -> ScenarioInstance:
        sync.Completion("c").wait()
        return ScenarioInstance()

    with pytest.raises(RuntimeError, match="outside a model thread"):
        run_once(build)


def test_list_walks_get_a_scheduling_point() -> None:
    seen: list[object] = []

    def build() -> ScenarioInstance:
        run = ScenarioInstance()

        @run.thread("walker")
        def walker() -> None:
            walk = sync.backend().walk_point
            assert walk is not None
            walk("element")
            seen.append("after")

        return run

    out = run_once(build)
    assert [op for _, op, _ in out.trace] == ["start", "walk"]
    assert seen == ["after"]


def test_a_random_walk_subclass_with_its_own_pick_is_asked_at_every_decision() -> None:
    # The scheduler draws a plain random walk's choices from its stream inline; a subclass that
    # defines ``pick`` itself must still be the one that decides.
    from mmu_notifier.explore import RandomWalk

    asked = []

    class First(RandomWalk):
        def pick(self, n: int) -> int:
            asked.append(n)
            return 0

    def build() -> ScenarioInstance:
        run = ScenarioInstance()
        for name in "AB":
            run.thread(name)(lambda: [sync.yield_now() for _ in range(3)])
        return run

    out = Execution(Scenario("own-pick", build), First(0), record=False).run()
    assert out.status == FINISHED
    assert asked and all(n >= 1 for n in asked)
    assert out.trace[-1][0] == 1  # always the first runnable thread: A finished first, B took the last step
    plain = Execution(Scenario("own-pick", build), RandomWalk(0), record=False).run()
    assert plain.status == FINISHED
