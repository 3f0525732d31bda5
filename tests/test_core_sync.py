"""Primitives and SRCU on real threads (section 2 and 8 of the core issue)."""

from __future__ import annotations

import threading

import pytest

import mmu_notifier as mn
from mmu_notifier import sync
from mmu_notifier.errors import DeadlockError, LockingError
from mmu_notifier.srcu import Srcu


def _run(*targets):
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)


def test_mutex_excludes_and_counts_correctly():
    lock = sync.Mutex("counter.lock")
    box = {"n": 0}

    def work():
        for _ in range(500):
            with lock:
                value = box["n"]
                sync.yield_now()
                box["n"] = value + 1

    _run(work, work, work)
    assert box["n"] == 1500


def test_sleeping_under_spinlock_is_caught():
    spin = sync.SpinLock("driver.spin")
    mutex = sync.Mutex("driver.mutex")
    with spin, pytest.raises(mn.SleepInAtomicError, match=r"holding spinlock driver\.spin"):
        mutex.lock()
    assert sync.current().atomic_depth == 0


def test_unlock_by_non_owner_is_an_error():
    lock = sync.Mutex("m")
    with pytest.raises(LockingError, match="does not hold"):
        lock.unlock()


def test_recursive_mutex_lock_is_a_deadlock():
    lock = sync.Mutex("m")
    with lock, pytest.raises(mn.DeadlockError):
        lock.lock()


def test_rwsem_readers_share_and_writer_excludes():
    sem = sync.RWSemaphore("sem")
    sem.down_read()
    other_reader = []

    def read_too():
        other_reader.append(sem.down_read_trylock())
        sem.up_read()

    _run(read_too)
    assert other_reader == [True]
    assert sem.down_write_trylock() is False
    sem.up_read()
    assert sem.down_write_trylock() is True
    sem.up_write()


def test_rwsem_waiting_writer_blocks_new_readers():
    sem = sync.RWSemaphore("sem")
    sem.down_read()
    writer_waiting = threading.Event()
    got_write = threading.Event()

    def writer():
        writer_waiting.set()
        sem.down_write()
        got_write.set()
        sem.up_write()

    thread = threading.Thread(target=writer)
    thread.start()
    writer_waiting.wait(5)
    while sem.writers_waiting == 0:
        sync.yield_now()
    assert sem.down_read_trylock() is False  # a waiting writer holds back new readers
    sem.up_read()
    thread.join(5)
    assert got_write.is_set()
    assert sem.down_write_trylock() is True
    sem.downgrade_write()
    assert sem.readers and sem.writer is None
    sem.up_read()


def test_wait_queue_and_completion_wake_waiters():
    queue = sync.WaitQueue("wq")
    done = sync.Completion("done")
    state = {"ready": False}

    def waiter():
        queue.wait_event(lambda: state["ready"])
        done.complete()

    thread = threading.Thread(target=waiter)
    thread.start()
    state["ready"] = True
    queue.wake_up_all()
    assert done.wait(5) is True
    thread.join(5)
    assert done.wait(0.01) is False  # consumed


def test_completion_all_lets_everyone_through_until_reinit():
    done = sync.Completion("done")
    done.complete_all()
    assert done.wait(0) and done.wait(0)
    done.reinit()
    assert not done.is_done()


def test_wait_event_times_out():
    assert sync.WaitQueue("wq").wait_event(lambda: False, timeout=0.01) is False


def test_atomic_operations():
    counter = sync.Atomic("c", 1)
    assert counter.inc() == 2 and counter.dec() == 1 and counter.dec() == 0
    assert counter.inc_not_zero() is False and counter.read() == 0


def test_non_block_section_makes_sleeping_a_bug():
    with sync.non_block(), pytest.raises(mn.SleepInAtomicError, match="non-blockable"):
        sync.might_sleep("test")
    sync.might_sleep("test")  # fine outside


def test_srcu_synchronize_waits_for_existing_readers_only():
    srcu = Srcu()
    inside, release = threading.Event(), threading.Event()
    finished = threading.Event()

    def reader():
        with srcu.read_section():
            inside.set()
            release.wait(5)

    def syncer():
        srcu.synchronize()
        finished.set()

    reader_thread = threading.Thread(target=reader)
    reader_thread.start()
    inside.wait(5)
    sync_thread = threading.Thread(target=syncer)
    sync_thread.start()
    sync_thread.join(0.05)
    assert not finished.is_set()
    with srcu.read_section():  # a later reader does not hold the grace period up
        release.set()
        sync_thread.join(5)
        assert finished.is_set()
    reader_thread.join(5)


def test_srcu_call_runs_after_readers_and_barrier_waits():
    srcu = Srcu()
    ran = []
    index = srcu.read_lock()
    srcu.call(lambda: ran.append(sync.current().atomic_depth))
    assert ran == []
    srcu.read_unlock(index)
    srcu.barrier()
    assert ran == [1]  # ran in atomic (softirq-like) context
    assert srcu.pending_callbacks() == 0


def test_srcu_callbacks_run_in_queue_order():
    srcu = Srcu()
    ran = []
    for number in range(20):
        srcu.call(lambda number=number: ran.append(number))
    srcu.barrier()
    assert ran == list(range(20))


def test_srcu_synchronize_inside_own_read_section_is_a_deadlock():
    srcu = Srcu()
    with srcu.read_section(), pytest.raises(mn.DeadlockError):
        srcu.synchronize()


def test_srcu_unlock_of_foreign_index_is_an_error():
    srcu = Srcu()
    with pytest.raises(Exception, match="did not enter"):
        srcu.read_unlock(42)


# -- WaitQueue.wait_event_locked (the fixed mmu_interval_notifier_remove wait) -----------------


def test_wait_event_locked_sees_a_change_made_under_the_lock_in_every_interleaving() -> None:
    """The condition is read under the spinlock and no wake-up between check and sleep is lost."""
    from mmu_notifier.explore import Scenario, ScenarioInstance, Violation, explore

    def build() -> ScenarioInstance:
        lock = sync.SpinLock("subscriptions->lock")
        wq = sync.WaitQueue("subscriptions->wq")
        state = {"seq": 1}
        run = ScenarioInstance()

        @run.thread("remover")
        def remover() -> None:
            def released() -> bool:
                if not lock.held_by_current():
                    raise Violation("condition evaluated without the lock")
                return state["seq"] != 1

            assert wq.wait_event_locked(released, lock)

        @run.thread("invalidate_end")
        def end() -> None:
            with lock:
                state["seq"] += 1
            wq.wake_up_all()

        return run

    result = explore(Scenario("wait-event-locked", build), "dfs", budget=500)
    assert not result.bugs, result.bugs[0].problem.message if result.bugs else ""


def test_wait_event_locked_times_out_and_rejects_a_held_lock() -> None:
    lock = sync.Mutex("m")
    wq = sync.WaitQueue("wq")
    assert wq.wait_event_locked(lambda: False, lock, timeout=0.01) is False
    assert wq.wait_event_locked(lambda: True, lock) is True
    with lock, pytest.raises(DeadlockError, match=r"wait_event_locked\(wq\) holding m"):
        wq.wait_event_locked(lambda: True, lock)
    with pytest.raises(LockingError, match="is not a Mutex or SpinLock"):
        wq.wait_event_locked(lambda: True, object())  # type: ignore[arg-type]


class _CountingWakes(sync.ThreadBackend):
    """The threads backend, counting the wakes of one resource (or of a wake channel of its waiters)."""

    def __init__(self, watched: list[object], eager: bool) -> None:
        super().__init__()
        self.watched = watched
        self.eager_wakes = eager
        self.wakes = 0

    def wake(self, resource: object) -> None:
        if self.watched and (resource is self.watched[0] or getattr(resource, "srcu", None) is self.watched[0]):
            self.wakes += 1
        super().wake(resource)


@pytest.mark.parametrize("eager", [False, True])
def test_srcu_wakes_a_grace_period_waiter_only_when_its_grace_period_ends(eager):
    # A leave that is not the oldest reader's cannot end a grace period: it wakes nobody, unless the
    # backend asks for a wake at every change (the explorer's partial-order reduction does).
    watched: list[object] = []
    backend = _CountingWakes(watched, eager)
    with sync.use_backend(backend):
        srcu = Srcu()
        watched.append(srcu)
        oldest, newer = srcu.read_lock(), srcu.read_lock()
        finished = threading.Event()
        syncer = threading.Thread(target=lambda: (srcu.synchronize(), finished.set()))
        syncer.start()

        def asleep() -> bool:  # on the domain (eager), else on its grace period's channel
            return any(backend.has_waiters(key) for key in [srcu, *list(srcu._channels.values())])

        for _ in range(500):
            if asleep():
                break
            threading.Event().wait(0.01)
        assert asleep()
        srcu.read_unlock(newer)
        assert backend.wakes == (1 if eager else 0)
        assert not finished.wait(0.05)
        srcu.read_unlock(oldest)
        syncer.join(5)
        assert finished.is_set()
        assert backend.wakes == (2 if eager else 1)
