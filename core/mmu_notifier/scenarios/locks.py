"""Lock-rule demonstrations: what each lock detector reports, on the smallest code that shows it.

* ``abba-deadlock``: two threads take the same two mutexes in opposite orders
  and can block each other for ever (the wait-for cycle is reported);
* ``lock-order-inversion``: the same opposite orders, but the second thread
  starts only after the first finished, so no run can deadlock; lockdep's
  lock-class graph still has the cycle, and so does the report;
* ``sleep-under-spinlock``: a mutex (which may sleep) taken while a spinlock
  is held, the bug ``might_sleep()`` catches.
"""

from __future__ import annotations

from mmu_notifier import sync
from mmu_notifier.explore import Scenario, ScenarioInstance


def _nested(outer: sync.Mutex, inner: sync.Mutex) -> None:
    with outer, inner:
        sync.yield_now()


def _abba() -> ScenarioInstance:
    a, b = sync.Mutex("lock_a"), sync.Mutex("lock_b")
    run = ScenarioInstance()
    run.thread("T1")(lambda: _nested(a, b))
    run.thread("T2")(lambda: _nested(b, a))
    return run


def _inversion() -> ScenarioInstance:
    a, b = sync.Mutex("lock_a"), sync.Mutex("lock_b")
    first_done = sync.Completion("t1_done")
    run = ScenarioInstance()

    @run.thread("T1")
    def t1() -> None:
        _nested(a, b)
        first_done.complete()

    @run.thread("T2")
    def t2() -> None:
        first_done.wait()
        _nested(b, a)

    return run


def _sleep_under_spinlock() -> ScenarioInstance:
    spin, mutex = sync.SpinLock("dev_lock"), sync.Mutex("dev_mutex")
    run = ScenarioInstance()

    @run.thread("irq-path")
    def irq_path() -> None:
        with spin, mutex:
            pass

    @run.thread("user-path")
    def user_path() -> None:
        with mutex:
            sync.yield_now()

    return run


SCENARIOS = (
    Scenario("abba-deadlock", _abba, "two threads take lock_a and lock_b in opposite orders", "deadlock"),
    Scenario(
        "lock-order-inversion",
        _inversion,
        "opposite lock orders in two threads that never overlap: no deadlock, but lockdep's cycle",
        "lock-order-inversion",
    ),
    Scenario(
        "sleep-under-spinlock",
        _sleep_under_spinlock,
        "a mutex taken while a spinlock is held",
        "sleep-in-atomic",
    ),
)
