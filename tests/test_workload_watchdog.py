"""The watchdog blames a call that does not return, never one that only took long while the run went on.

A deterministic run of thousands of processes keeps calls in flight for a long
time while their model threads wait for their turn or for a model lock (the
10,000-process run under CI load was stopped as a "hang"); such a call is a
hang only when the whole run made no progress for the deadline.
"""

from __future__ import annotations

import time

from greenlet import greenlet

from mmu_notifier.workload.stats import StatsTracer


def parked_call(tracer: StatsTracer) -> greenlet:
    """A model thread switched out in the middle of a driver call (its greenlet keeps a saved frame)."""

    def body() -> None:
        with tracer.calling("mirror", "invalidate_range_start"):
            greenlet.getcurrent().parent.switch()

    glet = greenlet(body)
    glet.switch()
    assert glet.gr_frame is not None
    return glet


def test_a_waiting_call_is_no_hang_while_the_run_makes_progress() -> None:
    tracer = StatsTracer({})
    tracer.clock = time.monotonic() - 10  # the parked call began 10 s ago
    glet = parked_call(tracer)
    tracer.callbacks += 1  # others go on
    assert tracer.overdue(1.0) is None
    tracer.callbacks += 1
    assert tracer.overdue(1.0) is None
    glet.switch()  # let it finish
    assert not tracer.in_flight


def test_a_waiting_call_is_a_hang_once_nothing_moved_for_the_deadline() -> None:
    tracer = StatsTracer({})
    tracer.clock = time.monotonic() - 10
    glet = parked_call(tracer)
    assert tracer.overdue(0.05) is None  # progress seen just now (a call began)
    time.sleep(0.1)
    late = tracer.overdue(0.05)  # nothing moved since
    assert late is not None and late.driver == "mirror" and late.what == "invalidate_range_start"
    glet.switch()


def test_a_running_call_is_a_hang_once_nothing_moved_for_the_deadline() -> None:
    tracer = StatsTracer({})
    tracer.clock = time.monotonic() - 10
    seen: list[object] = []
    with tracer.calling("mirror", "invalidate_range_end"):  # running on this thread, not in a model lock
        tracer.callbacks += 1
        seen.append(tracer.overdue(0.05))  # progress seen just now
        time.sleep(0.1)
        seen.append(tracer.overdue(0.05))  # nothing moved since: the running call is the hang
    assert seen[0] is None
    late = seen[1]
    assert late is not None and getattr(late, "what", None) == "invalidate_range_end"
