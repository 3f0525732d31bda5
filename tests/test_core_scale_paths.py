"""The main job's costs per step (issues 16 item 6, 17 and 18): observers, lockdep sites, the recorder's
per-mm count, callback wrappers resolved once, and each check touching only its own mm's state."""

from __future__ import annotations

import itertools

import mmu_notifier as mn
from mmu_notifier import notifier, sync
from mmu_notifier.explore import Execution, Kind, RandomWalk, Scenario, ScenarioInstance
from mmu_notifier.invariants import Recorder
from mmu_notifier.range import RANGE_BLOCKABLE, Event, Range
from mmu_notifier.workload.stats import DriverStats, StatsTracer


class Plain(mn.Driver):
    """A driver whose start and free do nothing: the wrappers around them are what is tested."""

    name = "plain"

    def __init__(self) -> None:
        super().__init__()
        self.starts = 0

    @mn.hookimpl
    def alloc_notifier(self, mm: mn.MM) -> mn.MMUNotifier:
        return mn.MMUNotifier()

    @mn.hookimpl
    def free_notifier(self, subscription: mn.MMUNotifier) -> None:
        pass

    @mn.hookimpl
    def invalidate_range_start(self, subscription: mn.MMUNotifier, range: Range) -> int:
        self.starts += 1
        if range.start == 0xBAD000:
            raise RuntimeError("a driver bug")
        return 0

    @mn.hookimpl
    def invalidate_range_end(self, subscription: mn.MMUNotifier, range: Range) -> None:
        pass


def _two_threads(observe: bool) -> ScenarioInstance:
    lock = sync.Mutex("shared")

    def observer() -> None:
        if observe:
            with sync.observing():
                for _ in range(20):
                    with lock:
                        pass
        else:
            for _ in range(20):
                with lock:
                    pass

    def worker() -> None:
        for _ in range(5):
            with lock:
                sync.yield_now()

    return ScenarioInstance(threads=[("observer", observer), ("worker", worker)])


def test_an_observer_block_makes_no_scheduling_decisions_but_still_waits_for_a_held_lock() -> None:
    outcomes = {}
    for observe in (False, True):
        scenario = Scenario(f"observe-{observe}", lambda observe=observe: _two_threads(observe))
        outcomes[observe] = Execution(scenario, RandomWalk(3)).run()
    assert outcomes[False].status == outcomes[True].status == "finished"
    observed = [step for step in outcomes[True].trace if step[0] == 0]
    plain = [step for step in outcomes[False].trace if step[0] == 0]
    # unobserved: 20 lock/unlock pairs are 40 steps of their own; observed: the thread's start, and a
    # wait for the worker's lock at most (a wait is a step: the holder runs meanwhile)
    assert len(plain) >= 40
    assert len(observed) <= 3


def _deadlock() -> ScenarioInstance:
    a, b = sync.Mutex("A"), sync.Mutex("B")

    def one() -> None:
        with a:
            sync.yield_now()
            with b:
                pass

    def two() -> None:
        with b:
            sync.yield_now()
            with a:
                pass

    return ScenarioInstance(threads=[("one", one), ("two", two)])


def test_an_execution_without_lock_sites_is_the_same_run_and_finds_the_same_deadlock() -> None:
    scenario = Scenario("abba", _deadlock)
    for seed in range(20):
        full = Execution(scenario, RandomWalk(seed)).run()
        light = Execution(scenario, RandomWalk(seed), lock_sites=False).run()
        assert light.choices == full.choices
        assert (light.problem is None) == (full.problem is None)
        if full.problem is not None:
            assert light.problem is not None and light.problem.kind == full.problem.kind == Kind.DEADLOCK
            assert full.problem.details != {} and light.problem.message == full.problem.message
            return
    raise AssertionError("no seed of 20 deadlocked the ABBA scenario")


def test_the_recorder_counts_invalidations_in_flight_per_mm_and_forgets_ended_ranges() -> None:
    kernel = mn.Kernel()
    driver = Plain()
    kernel.drivers.add(driver, name="plain")
    recorder = Recorder().install(kernel)
    mm, other = mn.MM(kernel), mn.MM(kernel)
    for each in (mm, other):
        mn.get(driver, each)
    rng = Range(mm, 0, 4096, Event.CLEAR)
    notifier.invalidate_range_start(rng)
    assert recorder.in_flight(mm) and not recorder.in_flight(other)
    notifier.invalidate_range_end(rng)
    assert not recorder.in_flight(mm)
    assert recorder.ranges == {} and recorder.open_by_mm == {}


def test_a_wrap_callback_plugin_wraps_each_driver_callback_once_innermost() -> None:
    kernel = mn.Kernel()
    driver = Plain()
    ops = kernel.drivers.add(driver, name="plain")
    wrapped: list[tuple[str, str]] = []
    seen: list[str] = []

    class Wrapper:
        def wrap_callback(self, name: str, callback: str, function):  # type: ignore[no-untyped-def]
            wrapped.append((name, callback))

            def call(*args):  # type: ignore[no-untyped-def]
                seen.append(callback)
                return function(*args)

            return call

    plugin = Wrapper()
    kernel.drivers.add_plugin(plugin, name="wrapper")
    assert ("plain", "invalidate_range_start") in wrapped and ("plain", "exerciser") not in wrapped
    mm = mn.MM(kernel)
    mn.get(driver, mm)
    assert seen == ["alloc_notifier"]
    seen.clear()
    rng = Range(mm, 0, 4096, Event.CLEAR, flags=RANGE_BLOCKABLE)
    assert ops.invalidate_range_start is not None
    notifier.invalidate_range_start(rng)
    notifier.invalidate_range_end(rng)
    assert seen == ["invalidate_range_start", "invalidate_range_end"] and driver.starts == 1
    kernel.drivers.remove_plugin(plugin)
    notifier.invalidate_range_start(rng)
    notifier.invalidate_range_end(rng)
    assert seen == ["invalidate_range_start", "invalidate_range_end"] and driver.starts == 2


def test_the_tracer_counts_callbacks_and_turns_a_driver_exception_into_its_fault() -> None:
    kernel = mn.Kernel()
    driver = Plain()
    kernel.drivers.add(driver, name="plain")
    stats = {"plain": DriverStats()}
    tracer = StatsTracer(stats)
    kernel.drivers.add_plugin(tracer, name="stats")
    mm = mn.MM(kernel)
    mn.get(driver, mm)
    good = Range(mm, 0, 4096, Event.CLEAR)
    notifier.invalidate_range_start(good)
    notifier.invalidate_range_end(good)
    bad = Range(mm, 0xBAD000, 0xBAE000, Event.UNMAP)
    notifier.invalidate_range_start(bad)  # the driver raises: a fault of that driver, the core carries on
    notifier.invalidate_range_end(bad)
    assert tracer.callbacks == 4 and tracer.in_flight == {}
    assert stats["plain"].invalidations == {"CLEAR": 1, "UNMAP": 1}
    assert [fault.where for fault in tracer.faults] == ["invalidate_range_start"]
    assert stats["plain"].violations == ["driver fault: invalidate_range_start raised RuntimeError: a driver bug"]


def test_lockdep_keys_per_object_locks_by_their_class() -> None:
    # one class for every instance (as the kernel's lock class key): nesting two instances is no edge,
    # and the order against another lock is recorded once, by class, however many instances there are
    outer = sync.Mutex("outer")
    objects = [sync.Mutex(f"bo{i}.resv", lock_class="reservation_ww_class_mutex") for i in range(50)]

    def body() -> None:
        for first, second in itertools.pairwise(objects):
            with outer, first, second:
                pass

    outcome = Execution(Scenario("classes", lambda: ScenarioInstance(threads=[("t", body)])), RandomWalk(0))
    result = outcome.run()
    assert result.status == "finished" and result.predicted is None
    assert set(outcome.lock_order.edges) == {("outer", "reservation_ww_class_mutex")}
