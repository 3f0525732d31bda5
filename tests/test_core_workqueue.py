"""Work queues (model of kernel/workqueue.c) under real threads and under the explorer."""

from __future__ import annotations

import threading

import pytest

import mmu_notifier as mn
from mmu_notifier import kmem, sync
from mmu_notifier.errors import DeadlockError, MisuseError
from mmu_notifier.explore import Scenario, ScenarioInstance, Violation, explore
from mmu_notifier.workqueue import (
    Work,
    Workqueue,
    cancel_work_sync,
    check_work_free,
    flush_work,
    queue_work,
    schedule_work,
)

# -- real threads ------------------------------------------------------------------------------


def test_queue_work_queues_once_while_pending_and_flush_waits() -> None:
    gate = threading.Event()
    runs: list[str] = []

    def body() -> None:
        gate.wait(5)
        runs.append(threading.current_thread().name)

    wq = Workqueue("test_wq")
    blocker = Work(lambda: gate.wait(5), name="blocker")
    work = Work(body, name="body")
    wq_one = Workqueue("ordered", max_active=1)
    assert queue_work(wq_one, blocker)
    assert queue_work(wq_one, work)
    assert not queue_work(wq_one, work)  # pending: queued once
    assert work.pending
    threading.Timer(0.05, gate.set).start()
    assert flush_work(work)  # pending at the call: waits for it
    assert runs and runs[0].startswith("kworker/ordered")
    assert not work.pending and not work.running
    assert not flush_work(work)  # nothing to wait for
    wq.destroy()
    wq_one.destroy()


def test_requeue_while_running_runs_again_not_concurrently() -> None:
    started = threading.Event()
    release = threading.Event()
    active = []
    overlaps = []
    count = []

    def body() -> None:
        active.append(1)
        if len(active) > 1:
            overlaps.append(1)
        count.append(1)
        if len(count) == 1:
            started.set()
            release.wait(5)
        active.pop()

    wq = Workqueue("events_test")
    work = Work(body, name="again")
    assert wq.queue_work(work)
    assert started.wait(5)
    assert work.running and not work.pending
    assert wq.queue_work(work)  # running, not pending: queued again
    release.set()
    wq.drain()
    assert len(count) == 2 and not overlaps
    wq.destroy()


def test_cancel_work_sync_takes_pending_item_off_and_waits_for_running() -> None:
    gate = threading.Event()
    ran: list[str] = []
    wq = Workqueue("cancel_wq", max_active=1)

    def first_body() -> None:
        gate.wait(5)
        ran.append("first")

    first = Work(first_body, name="first")
    second = Work(lambda: ran.append("second"), name="second")
    wq.queue_work(first)
    wq.queue_work(second)
    assert cancel_work_sync(second) is True
    assert not second.pending
    gate.set()
    assert cancel_work_sync(first) is False  # was running: waited for it
    assert ran == ["first"] and not first.running
    wq.flush()
    assert ran == ["first"]
    wq.destroy()


def test_schedule_work_uses_the_kernels_system_workqueue() -> None:
    kernel = mn.Kernel(frames=16)
    done = threading.Event()
    work = Work(done.set, name="sys")
    assert schedule_work(work, kernel)
    flush_work(work)
    assert done.is_set() and work.wq is kernel.system_wq


def test_exception_in_work_is_recorded_and_the_worker_goes_on() -> None:
    kernel = mn.Kernel(frames=16)
    after = threading.Event()
    bad = Work(lambda: 1 / 0, name="bad")  # type: ignore[func-returns-value]
    good = Work(after.set, name="good")
    schedule_work(bad, kernel)
    schedule_work(good, kernel)
    kernel.system_wq.flush()
    assert after.is_set()
    assert len(kernel.bugs) == 1 and isinstance(kernel.bugs[0], ZeroDivisionError)


def test_misuse_is_a_typed_error_naming_the_item_and_changes_nothing() -> None:
    wq = Workqueue("gone")
    wq.destroy()
    work = Work(lambda: None, name="late")
    with pytest.raises(MisuseError, match=r"queue_work\(late\) on workqueue gone, which was destroyed"):
        wq.queue_work(work)
    assert not work.pending and work.wq is None
    with pytest.raises(MisuseError, match="destroy_workqueue"):
        wq.destroy()
    with pytest.raises(MisuseError, match="not callable"):
        Work(42, name="x")  # type: ignore[arg-type]
    with pytest.raises(MisuseError, match="is not a Kernel"):
        schedule_work(work, kernel="k")


def test_freeing_a_queued_work_item_is_reported_naming_it() -> None:
    gate = threading.Event()
    wq = Workqueue("free_wq", max_active=1)

    class Owner:
        def __init__(self) -> None:
            self.work = Work(lambda: None, name="owner_release")

    owner = Owner()
    wq.queue_work(Work(lambda: gate.wait(5), name="blocker"))
    wq.queue_work(owner.work)
    expected = r"work owner_release \(inside Owner\) freed while queued on workqueue free_wq"
    with pytest.raises(MisuseError, match=expected):
        check_work_free(owner)
    assert owner.work.pending  # nothing changed
    gate.set()
    wq.drain()
    check_work_free(owner)  # idle: fine


def test_a_work_item_may_free_its_owner_from_its_own_function_but_no_other_task_may() -> None:
    """process_one_work never touches the item after calling it: freeing it from inside is legal."""
    kernel = mn.Kernel(frames=16)
    started, gate = threading.Event(), threading.Event()

    class Owner:
        def __init__(self, func: object) -> None:
            self.work = Work(func, name="owner_release")  # type: ignore[arg-type]

    freed_inside: list[Owner] = []

    def release() -> None:
        kmem.kfree(freed_inside[0])  # the kernel's kfree(p) at the end of its release work

    inside = Owner(release)
    freed_inside.append(inside)
    schedule_work(inside.work, kernel)
    kernel.system_wq.flush()
    assert kernel.bugs == [] and kmem.is_freed(inside)

    def wait() -> None:
        started.set()
        gate.wait(5)

    other = Owner(wait)
    schedule_work(other.work, kernel)
    assert started.wait(5)
    with pytest.raises(MisuseError, match=r"work owner_release \(inside Owner\) freed while running"):
        kmem.kfree(other)
    assert not kmem.is_freed(other)  # nothing changed
    gate.set()
    kernel.system_wq.flush()


def test_flushing_from_the_item_itself_is_a_deadlock_error() -> None:
    errors: list[BaseException] = []
    wq = Workqueue("self_flush", on_error=errors.append)
    holder: list[Work] = []

    def body() -> None:
        flush_work(holder[0])

    holder.append(Work(body, name="selfish"))
    wq.queue_work(holder[0])
    wq.drain()
    assert len(errors) == 1 and isinstance(errors[0], DeadlockError)
    assert "flush_work(selfish) from the work item itself" in str(errors[0])


# -- the explorer ------------------------------------------------------------------------------


def test_flush_and_cancel_race_under_the_explorer() -> None:
    """Every interleaving of queue/cancel/flush leaves each queued instance run or cancelled, once."""

    def build() -> ScenarioInstance:
        wq = Workqueue("race_wq")
        lock = sync.SpinLock("counter")
        state = {"runs": 0, "queued": 0, "cancelled": 0}

        def body() -> None:
            with lock:
                state["runs"] += 1

        work = Work(body, name="raced")
        run = ScenarioInstance()

        @run.thread("queuer")
        def queuer() -> None:
            for _ in range(2):
                if wq.queue_work(work):
                    state["queued"] += 1
                sync.yield_now()

        @run.thread("canceller")
        def canceller() -> None:
            if cancel_work_sync(work):
                state["cancelled"] += 1
            if work.running:
                raise Violation("cancel_work_sync returned while the item runs")

        @run.thread("flusher")
        def flusher() -> None:
            flush_work(work)

        def finale() -> None:
            wq.drain()
            if state["runs"] + state["cancelled"] != state["queued"]:
                raise Violation(f"runs+cancelled != queued: {state}")

        run.finale = finale
        return run

    result = explore(Scenario("wq-flush-cancel", build), "random", budget=300)
    assert not result.bugs, result.bugs[0].problem.message if result.bugs else ""
    result = explore(Scenario("wq-flush-cancel", build), "pct", budget=200)
    assert not result.bugs


def test_work_runs_on_a_model_worker_under_the_explorer() -> None:
    def build() -> ScenarioInstance:
        kernel = mn.Kernel(frames=16)
        ran: list[str] = []
        work = Work(lambda: ran.append(sync.current().name), name="hello")
        run = ScenarioInstance()

        @run.thread("A")
        def a() -> None:
            schedule_work(work, kernel)
            flush_work(work)
            if ran != ["kworker/events"]:
                raise Violation(f"ran on {ran}")

        return run

    assert not explore(Scenario("wq-worker", build), "random", budget=20).bugs
