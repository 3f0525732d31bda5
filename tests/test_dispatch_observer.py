"""The registry's dispatch-observer protocol (issue 18 target 5) and the main job's tracer built on it.

With an observer registered the list walks count each driver's
``invalidate_range_start``/``_end``/``invalidate_range`` calls and isolate a
driver's exception themselves, with no wrapper between the walk and the
driver: counted per call on the deterministic backend, per walk on real
threads. The counts must be what was actually called (a walk skips a
subscription unlinked since its snapshot), a driver's exception must stay its
fault while the walk goes on, and the watchdog must still name a callback
that never returns, by sampling frames.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from greenlet import greenlet

import mmu_notifier as mn
from mmu_notifier import notifier
from mmu_notifier.errors import TryAgainError
from mmu_notifier.explore import Execution, RandomWalk, Scenario, ScenarioInstance
from mmu_notifier.invariants import Recorder
from mmu_notifier.range import RANGE_BLOCKABLE, Event, Range
from mmu_notifier.workload.stats import DriverStats, StatsTracer


class Logged(mn.Driver):
    """Logs every start and end per subscription; ``hook`` runs inside each start (to unlink, raise, block)."""

    name = "logged"

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[mn.MMUNotifier] = []
        self.ends: list[mn.MMUNotifier] = []
        self.hook: Callable[[mn.MMUNotifier, Range], Any] | None = None

    @mn.hookimpl
    def alloc_notifier(self, mm: mn.MM) -> mn.MMUNotifier:
        return mn.MMUNotifier()

    @mn.hookimpl
    def free_notifier(self, subscription: mn.MMUNotifier) -> None:
        pass

    @mn.hookimpl
    def invalidate_range_start(self, subscription: mn.MMUNotifier, range: Range) -> int:
        self.starts.append(subscription)
        if self.hook is not None:
            return int(self.hook(subscription, range) or 0)
        return 0

    @mn.hookimpl
    def invalidate_range_end(self, subscription: mn.MMUNotifier, range: Range) -> None:
        self.ends.append(subscription)


def _world(names: tuple[str, ...] = ("logged",), subs: int = 3) -> tuple[mn.Kernel, dict[str, Logged], mn.MM,
                                                                           StatsTracer, list[mn.MMUNotifier]]:
    """A kernel with a driver per name, the tracer, and ``subs`` subscriptions of each on one mm (oldest first)."""
    kernel = mn.Kernel()
    drivers = {name: Logged() for name in names}
    for name, driver in drivers.items():
        kernel.drivers.add(driver, name=name)
    tracer = StatsTracer({name: DriverStats() for name in names})
    kernel.drivers.add_plugin(tracer, name="stats")
    mm = mn.MM(kernel)
    registered = []
    for _ in range(subs):
        for driver in drivers.values():
            sub = mn.MMUNotifier()
            mn.register(sub, mm, driver=driver)
            registered.append(sub)
    return kernel, drivers, mm, tracer, registered


def _deterministic(body: Callable[[], None]) -> None:
    """Run ``body`` as the one model thread of a deterministic execution (walk points: the counted walks)."""

    def build() -> ScenarioInstance:
        return ScenarioInstance(threads=[("t", body)])

    outcome = Execution(Scenario("observer", build), RandomWalk(0)).run()
    assert outcome.status == "finished", outcome.problem


BACKENDS = {"threads": lambda body: body(), "deterministic": _deterministic}


def test_the_tracer_leaves_the_walks_callbacks_unwrapped_and_wraps_the_others() -> None:
    kernel, drivers, _, tracer, _ = _world()
    ops = kernel.drivers.ops_of("logged")
    assert kernel.drivers.observed
    assert ops.invalidate_range_start == drivers["logged"].invalidate_range_start  # the bound method itself
    assert ops.invalidate_range_end == drivers["logged"].invalidate_range_end
    assert ops.isolated == frozenset()
    assert ops.free_notifier != drivers["logged"].free_notifier  # counted (freed) by the tracer's closure
    kernel.drivers.remove_plugin(tracer)
    assert not kernel.drivers.observed


@pytest.mark.parametrize("backend", BACKENDS)
def test_counts_are_what_was_called_when_the_walk_skips_a_subscription_unlinked_since_its_snapshot(
        backend: str) -> None:
    kernel, drivers, mm, tracer, subs = _world(("logged", "other"), subs=3)
    logged = drivers["logged"]
    newest, oldest = subs[-2], subs[0]  # the walk goes newest first: "other"'s newest, then logged's newest
    assert newest.ops.name == "logged" and oldest.ops.name == "logged"

    def unlink_the_oldest(subscription: mn.MMUNotifier, range: Range) -> int:
        if subscription is newest and oldest.linked:
            mn.put(oldest)  # the last put: unlinked at once (the walk's snapshot still holds it)
        return 0

    logged.hook = unlink_the_oldest
    rng = Range(mm, 0, 4096, Event.CLEAR, flags=RANGE_BLOCKABLE)

    def body() -> None:
        notifier.invalidate_range_start(rng)
        notifier.invalidate_range_end(rng)
        mn.synchronize(kernel)  # the put's deferred free_notifier

    BACKENDS[backend](body)
    assert oldest not in logged.starts and len(logged.starts) == 2 and len(logged.ends) == 2
    assert len(drivers["other"].starts) == 3 and len(drivers["other"].ends) == 3
    assert tracer.stats["logged"].invalidations == {"CLEAR": 2}
    assert tracer.stats["other"].invalidations == {"CLEAR": 3}
    # the starts and ends actually called, nothing of the skipped one; and the deferred free_notifier
    assert tracer.callbacks == 2 + 2 + 3 + 3 + 1 and tracer.stats["logged"].freed == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_drivers_exception_is_its_fault_and_the_walk_goes_on_with_no_wrapper(backend: str) -> None:
    kernel, drivers, mm, tracer, _ = _world(("bad", "good"), subs=2)

    def boom(subscription: mn.MMUNotifier, range: Range) -> int:
        raise RuntimeError("bad: start boom")

    drivers["bad"].hook = boom
    assert kernel.drivers.ops_of("bad").invalidate_range_start == drivers["bad"].invalidate_range_start
    rng = Range(mm, 0, 4096, Event.UNMAP, flags=RANGE_BLOCKABLE)

    def body() -> None:
        notifier.invalidate_range_start(rng)
        notifier.invalidate_range_end(rng)

    BACKENDS[backend](body)
    assert len(drivers["good"].starts) == 2 and len(drivers["good"].ends) == 2  # every other driver served
    assert len(drivers["bad"].ends) == 2  # the walk treated the failed start as a return: its end came too
    assert [fault.where for fault in tracer.faults] == ["invalidate_range_start"] * 2
    assert tracer.stats["bad"].violations == ["driver fault: invalidate_range_start raised RuntimeError: bad: start "
                                              "boom (2 times)"]
    assert tracer.stats["good"].violations == []
    text = tracer.stats["bad"].tracebacks[0]
    assert "test_dispatch_observer.py" in text and "notifier.py" not in text  # it begins where the driver was called
    assert tracer.stats["bad"].invalidations == {"UNMAP": 2} and tracer.stats["good"].invalidations == {"UNMAP": 2}
    assert tracer.callbacks == 8


def test_without_an_observer_a_drivers_exception_goes_through() -> None:
    kernel, drivers, mm, tracer, _ = _world(("bad",), subs=1)
    kernel.drivers.remove_plugin(tracer)
    drivers["bad"].hook = lambda subscription, range: 1 // 0
    with pytest.raises(ZeroDivisionError):
        notifier.invalidate_range_start(Range(mm, 0, 4096, Event.CLEAR, flags=RANGE_BLOCKABLE))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_errno_through_a_callback_stops_the_walk_and_the_counts_stop_with_it(backend: str) -> None:
    _kernel, drivers, mm, tracer, subs = _world(("logged",), subs=4)
    third = subs[1]  # newest first: subs[3], subs[2], then this one

    def again(subscription: mn.MMUNotifier, range: Range) -> int:
        if subscription is third:
            raise TryAgainError("an errno for the caller, not a driver fault")
        return 0

    drivers["logged"].hook = again
    raised: list[BaseException] = []

    def body() -> None:
        try:
            notifier.invalidate_range_start(Range(mm, 0, 4096, Event.CLEAR, flags=RANGE_BLOCKABLE))
        except TryAgainError as error:
            raised.append(error)

    BACKENDS[backend](body)
    assert raised and tracer.faults == []
    assert drivers["logged"].starts == [subs[3], subs[2], third]
    assert tracer.callbacks == 3  # the raising call began
    assert tracer.stats["logged"].invalidations == {"CLEAR": 2}  # and did not return


def test_with_a_pluggy_wrapper_the_registry_isolates_inside_it() -> None:
    seen: list[object] = []

    class Watcher:
        @mn.hookimpl(wrapper=True)
        def invalidate_range_start(self, subscription: mn.MMUNotifier, range: Range) -> Any:
            try:
                result = yield
            except Exception as error:
                seen.append(error)
                raise
            seen.append(("returned", result))
            return result

    kernel, drivers, mm, tracer, _ = _world(("bad",), subs=1)
    kernel.drivers.add_plugin(Watcher(), name="watcher")
    Recorder().install(kernel)
    ops = kernel.drivers.ops_of("bad")
    assert ops.isolated == {"invalidate_range_start", "invalidate_range_end"}
    drivers["bad"].hook = lambda subscription, range: 1 // 0
    assert notifier.invalidate_range_start_nonblock(Range(mm, 0, 4096, Event.CLEAR)) == 0
    assert seen == [("returned", None)]  # the wrapper saw what the tracer's closure used to give it
    assert [fault.where for fault in tracer.faults] == ["invalidate_range_start"]
    assert tracer.stats["bad"].invalidations == {"CLEAR": 1} and tracer.callbacks == 1


def test_a_refusal_is_counted_and_a_late_observer_keeps_its_own_baseline() -> None:
    kernel, drivers, mm, tracer, _ = _world(("logged",), subs=2)
    drivers["logged"].hook = lambda subscription, range: -11  # -EAGAIN
    assert notifier.invalidate_range_start_nonblock(Range(mm, 0, 4096, Event.CLEAR)) == -11
    assert tracer.stats["logged"].refusals == 2 and tracer.stats["logged"].invalidations == {"CLEAR": 2}
    late = StatsTracer({"logged": DriverStats()})
    kernel.drivers.add_plugin(late, name="late")
    assert late.callbacks == 0 and late.stats["logged"].refusals == 0 and late.stats["logged"].invalidations == {}
    assert notifier.invalidate_range_start_nonblock(Range(mm, 0, 4096, Event.UNMAP)) == -11
    assert late.stats["logged"].invalidations == {"UNMAP": 2} and late.callbacks == 2
    assert tracer.stats["logged"].invalidations == {"CLEAR": 2, "UNMAP": 2} and tracer.callbacks == 4


def test_an_unloaded_modules_callback_is_a_use_after_free_not_a_fault() -> None:
    kernel, drivers, mm, tracer, _subs = _world(("logged",), subs=1)
    kernel.drivers.unload(drivers["logged"])  # the subscription stays linked, as a buggy module leaves it
    with pytest.raises(mn.UseAfterFreeError):
        notifier.invalidate_range_start(Range(mm, 0, 4096, Event.CLEAR, flags=RANGE_BLOCKABLE))
    assert tracer.faults == [] and tracer.callbacks == 0 and drivers["logged"].starts == []


class Blocking(Logged):
    """Its start blocks on ``gate`` when its name says so (two instances share the code of one class)."""

    name = "blocking"

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label
        self.gate = threading.Event()

    @mn.hookimpl
    def invalidate_range_start(self, subscription: mn.MMUNotifier, range: Range) -> int:
        if self.label == "stuck":
            self.gate.wait(60)
        return 0


def test_the_watchdog_blames_a_callback_running_on_an_os_thread_by_sampling_its_frame() -> None:
    kernel = mn.Kernel()
    fine, stuck = Blocking("fine"), Blocking("stuck")
    kernel.drivers.add(fine, name="fine")
    kernel.drivers.add(stuck, name="stuck")
    tracer = StatsTracer({"fine": DriverStats(), "stuck": DriverStats()})
    kernel.drivers.add_plugin(tracer, name="stats")
    mm = mn.MM(kernel)
    mn.get(stuck, mm)
    mn.get(fine, mm)
    worker = threading.Thread(
        target=lambda: notifier.invalidate_range_start(Range(mm, 0, 4096, Event.CLEAR, flags=RANGE_BLOCKABLE)),
        name="mm-writer")
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not tracer._running_since and time.monotonic() < deadline:  # until a poll sees the call running
            assert tracer.overdue(0.05) is None
            time.sleep(0.01)
        assert tracer.in_flight == {}  # no entry per callback: the frame is what was seen
        time.sleep(0.1)
        late = tracer.overdue(0.05)  # nothing moved since the first sight
        assert late is not None
        assert (late.driver, late.what, late.thread) == ("stuck", "invalidate_range_start", "mm-writer")
    finally:
        stuck.gate.set()
        worker.join(10)
    assert tracer.overdue(0.05) is None  # it returned: progress, and nothing in flight


def test_the_watchdog_blames_a_parked_model_thread_inside_a_callback_once_nothing_moves() -> None:
    _kernel, drivers, mm, tracer, _ = _world(("logged",), subs=1)
    drivers["logged"].hook = lambda subscription, range: greenlet.getcurrent().parent.switch()  # switched out

    def thread_body() -> None:
        notifier.invalidate_range_start(Range(mm, 0, 4096, Event.CLEAR, flags=RANGE_BLOCKABLE))

    glet = greenlet(thread_body)
    glet.switch()
    assert glet.gr_frame is not None
    tracer.greenlets = lambda: [("P7", glet)]
    assert tracer.overdue(0.05) is None  # the run may still move
    time.sleep(0.1)
    late = tracer.overdue(0.05)
    assert late is not None and (late.driver, late.what, late.thread) == ("logged", "invalidate_range_start", "P7")
    glet.switch(0)  # let it finish
    assert glet.dead


def test_driver_stats_read_the_cores_counts_and_keep_what_is_added_to_them() -> None:
    kernel, _, mm, tracer, _ = _world(("logged",), subs=2)
    notifier.invalidate_range_start(Range(mm, 0, 4096, Event.CLEAR, flags=RANGE_BLOCKABLE))
    stats = tracer.stats["logged"]
    assert stats.invalidations == {"CLEAR": 2} and stats.own_invalidations == {}
    stats.invalidations["UNMAP"] += 1  # as a tracer's own wrapper (the interval invalidate) adds
    stats.refusals += 1
    notifier.invalidate_range_start(Range(mm, 0, 4096, Event.CLEAR, flags=RANGE_BLOCKABLE))
    assert stats.invalidations == {"CLEAR": 4, "UNMAP": 1} and stats.refusals == 1
    assert stats.to_json()["invalidations"] == {"CLEAR": 4, "UNMAP": 1}
    total = DriverStats()  # no dispatch counts: the counter itself, as the summary's totals add to it
    total.invalidations.update(stats.invalidations)
    total.refusals += stats.refusals
    assert total.invalidations == {"CLEAR": 4, "UNMAP": 1} and total.refusals == 1
    assert kernel.drivers.ops_of("logged").counts.starts[Event.CLEAR] == 4
