"""Interval-notifier (5.5) bugs as explorer scenarios: J-1, J-3 and J-4 of ``rdma-radeon-interval.md``.

* ``interval-remove-race`` (J-1, "mm/mmu_notifier.c: fix race in
  mmu_interval_notifier_remove()", 2022): thread ``invalidate`` runs a range
  that hits the driver's subscription; thread ``driver`` removes it meanwhile
  (the removal is deferred to the last end) and frees it. 5.5's remove waits
  for the sequence with an unlocked read, so it can see the end's ``seq++``
  and return while that end still walks the deferred list: the end then
  touches the freed subscription. ``interval-remove-fixed`` is the same flow
  with the fix (the sequence read under the lock): clean.
* ``interval-insert-after-exit`` (J-3, "mm/mmu_notifier: fix mmget() assert in
  __mmu_interval_notifier_insert", 2020): a driver that already has a
  subscription (so the mm has the tree) inserts a second one while the owner
  exits. 5.5 checks ``mm_count``, which the first subscription pins, so an
  insert after ``exit_mmap`` succeeds silently and that subscription never
  receives an invalidation. ``interval-insert-after-exit-fixed`` checks
  ``mm_users``: the late insert is refused (WARN + EINVAL); its driver pins
  the mm (``mmget_not_zero``) across the insert as a correct caller does, since
  the check and the tree insert are not atomic against a concurrent exit.
* ``interval-oom-reaper-stuck`` (J-4, **a reading of the code**, not a
  reported bug): a mixed mm with an interval subscription and a list
  subscriber that refuses non-blockable ranges. The OOM reaper's start
  succeeds in the interval part (the range counts as active, the sequence
  goes odd), then the list subscriber refuses; the core returns -EAGAIN
  without unwinding the interval part and the reaper sends no end. The
  sequence stays odd for ever: the driver's later remove waits for ever.
"""

from __future__ import annotations

import errno

from mmu_notifier import interval, kmem, notifier, sync
from mmu_notifier.errors import InvalidArgumentError
from mmu_notifier.explore import Scenario, ScenarioInstance, Violation
from mmu_notifier.hookspecs import hookimpl
from mmu_notifier.interval import MMUIntervalNotifier
from mmu_notifier.kernel import Kernel
from mmu_notifier.mm import MM
from mmu_notifier.notifier import MMUNotifier
from mmu_notifier.plugins import Driver
from mmu_notifier.range import Event, Range
from mmu_notifier.scenarios._checks import kernel_clean
from mmu_notifier.scenarios.notifier import loaded


class DeviceRange(MMUIntervalNotifier):
    """A driver object embedding its interval subscription; ``hit`` completes on each invalidate."""

    def __init__(self) -> None:
        super().__init__()
        self.hit = sync.Completion("device_range.hit")
        self.invalidations = 0


class IntervalDevice(Driver):
    """A minimal interval-notifier driver: ``invalidate`` records the sequence under its lock."""

    name = "interval-device"
    version = "5.5"
    required_hooks = ("invalidate",)

    @hookimpl
    def invalidate(self, subscription: MMUIntervalNotifier, range: Range, cur_seq: int) -> bool:
        """Record the collision (``set_seq``); the device holds no translations in these scenarios."""
        interval.interval_set_seq(subscription, cur_seq)
        if isinstance(subscription, DeviceRange):
            subscription.invalidations += 1
            subscription.hit.complete_all()
        return True


class RefusingListDriver(Driver):
    """A list (hlist) subscriber that refuses every non-blockable range, as a driver needing a mutex does."""

    name = "refusing-list"
    version = "5.4"
    required_hooks = ()

    @hookimpl
    def invalidate_range_start(self, subscription: MMUNotifier, range: Range) -> int:
        """-EAGAIN for the OOM reaper's ranges, 0 otherwise."""
        return 0 if range.blockable else -errno.EAGAIN


_PAGE = 4096


def _remove_race(unlocked_wait: bool) -> ScenarioInstance:
    kernel = Kernel(frames=16, interval_remove_unlocked_wait=unlocked_wait)
    _, ops = loaded(IntervalDevice)
    mm = MM(kernel)
    sub = DeviceRange()
    interval.interval_notifier_insert(sub, mm, 0, _PAGE, ops)
    run = ScenarioInstance()

    @run.thread("invalidate")
    def invalidate() -> None:
        rng = Range(mm, 0, _PAGE, Event.CLEAR)
        notifier.invalidate_range_start(rng)
        notifier.invalidate_range_end(rng)

    @run.thread("driver")
    def remove_and_free() -> None:
        sub.hit.wait()  # the range has hit the subscription: remove is deferred to its end
        interval.interval_notifier_remove(sub)
        kmem.kfree(sub)

    run.check(lambda: kernel_clean(kernel))
    return run


def _insert_after_exit(checks_mm_users: bool) -> ScenarioInstance:
    kernel = Kernel(frames=16, interval_insert_checks_mm_users=checks_mm_users)
    _, ops = loaded(IntervalDevice)
    mm = MM(kernel)
    first = DeviceRange()
    interval.interval_notifier_insert(first, mm, 0, _PAGE, ops)
    late = DeviceRange()
    refused: list[InvalidArgumentError] = []
    run = ScenarioInstance()

    run.thread("exit")(mm.exit)

    @run.thread("driver")
    def insert_more() -> None:
        if not checks_mm_users:
            try:  # holds only the mm_count pin of its first subscription, not mm_users
                interval.interval_notifier_insert(late, mm, _PAGE, _PAGE, ops)
            except InvalidArgumentError as error:
                refused.append(error)
            return
        # The fix (c9682d10271e) is a WARN for the caller that holds no mm_users: the check and
        # the tree insert are not atomic against exit, so a correct caller pins the mm across
        # the insert, and a caller that finds the mm dying does not insert at all.
        if not mm.mmget_not_zero():
            refused.append(InvalidArgumentError("mm is exiting: not inserted"))
            return
        try:
            interval.interval_notifier_insert(late, mm, _PAGE, _PAGE, ops)
        finally:
            mm.mmput()

    def finale() -> None:
        interval.interval_notifier_remove(first)
        if late.inserted:
            interval.interval_notifier_remove(late)

    run.finale = finale

    @run.check
    def late_subscription_invalidated_or_refused() -> None:
        if refused:
            return
        if late.invalidations == 0:
            raise Violation("an interval insert on an exited mm succeeded: the subscription was never invalidated "
                            "(exit_mmap had already run its RELEASE range); 5.5 checks mm_count instead of mm_users")

    run.check(lambda: kernel_clean(kernel, allow=lambda warning: "after exit_mmap" in warning))  # but the refusal

    return run


def _oom_reaper_stuck() -> ScenarioInstance:
    kernel = Kernel(frames=16)
    _, device = loaded(IntervalDevice)
    _, refusing = loaded(RefusingListDriver)
    mm = MM(kernel)
    start = mm.mmap(2 * _PAGE)
    mm.fault(start, write=True)
    notifier.register(MMUNotifier(), mm, driver=refusing)
    sub = DeviceRange()
    interval.interval_notifier_insert(sub, mm, start, 2 * _PAGE, device)
    reaped = sync.Completion("oom_reaped")
    run = ScenarioInstance()

    @run.thread("oom-reaper")
    def reap() -> None:
        mm.oom_reap()  # the list subscriber refuses: no end for the range
        reaped.complete_all()

    @run.thread("driver")
    def remove() -> None:
        reaped.wait()
        interval.interval_notifier_remove(sub)  # waits for a sequence that never moves

    return run


SCENARIOS = (
    Scenario(
        "interval-remove-race",
        lambda: _remove_race(unlocked_wait=True),
        "J-1 (5.5 to 5.18): remove reads the sequence without the lock, returns while the last end still applies "
        "the deferred list, the driver frees: use after free",
        "use-after-free",
    ),
    Scenario(
        "interval-remove-fixed",
        lambda: _remove_race(unlocked_wait=False),
        "J-1 fixed (2022): remove waits with the sequence read under the lock; the free comes after the end",
        None,
    ),
    Scenario(
        "interval-insert-after-exit",
        lambda: _insert_after_exit(checks_mm_users=False),
        "J-3 (5.5 to 5.9): an interval insert after exit_mmap on an mm that has the tree succeeds silently and "
        "is never invalidated",
        "invariant",
    ),
    Scenario(
        "interval-insert-after-exit-fixed",
        lambda: _insert_after_exit(checks_mm_users=True),
        "J-3 fixed (2020): the insert checks mm_users and refuses (WARN + EINVAL) once the mm has exited",
        None,
    ),
    Scenario(
        "interval-oom-reaper-stuck",
        _oom_reaper_stuck,
        "J-4 (a reading of the code, not a reported bug): the interval part of the OOM reaper's start succeeds, a "
        "list subscriber refuses, no end comes: the sequence stays odd and remove waits for ever",
        "deadlock",
    ),
)
