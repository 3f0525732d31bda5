"""Device accesses refused although every invalidation ended: the main job's progress judgement.

What it models: in the kernel, a mirror driver's ``invalidate_range_start``
blocks the device (raises an in-flight count, marks its ranges invalid) and
its ``invalidate_range_end`` unblocks it; a driver whose end forgets to undo
its start leaves the device refusing every fault for ever (the device's page
fault handler keeps answering "retry"). No kernel debugging aid reports
this: the device simply stops making progress. The conformance kit judges it
in its pairing check (a device access still refused, three tries in a row,
once every invalidation ended); :func:`judge_access` brings the same
judgement to ``mmu-notifier run`` at its quiescent points.

How it judges, without changing the run (no extra driver call, no scheduling
point): around one access step of a driver that declares
``device_translations``, :func:`quiet` takes a witness of the mm before the
first page and again after the last one. The mm is *quiet* for the driver when
no invalidation of it is in flight there (every start delivered to the
driver's subscriptions on the mm had its end, the interval state counts no
active range) and none of them is running a start or end callback; the witness is
the driver's count of invalidations delivered (over every mm, which only makes
the judgement more cautious) and the mm's interval sequence. When both
witnesses are quiet and equal, no invalidation started, ran or ended anywhere
near the access, so "retry" cannot have meant "invalidation in progress". One
such step refused at every page may still be a driver's own deferred work (a
restore worker that has not run yet); two steps in a row on the same mm, with
no page served in between, is the kit's "still refused" and is filed once per
driver as a ``start-end-pairing`` violation. Cost: per access step, twice, a
look at the driver's own subscriptions on the mm; nothing per page and nothing
that grows with the run.

Deliberate difference: the kit retries one address three times at once; the
main job never adds calls to a run (the same seed must give the same run),
so it counts whole access steps instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmu_notifier import exerciser as contract
from mmu_notifier.invariants import PAIRING, InvariantViolation
from mmu_notifier.mm import MM
from mmu_notifier.workload.world import JobWorld, record

__all__ = ["REPEATS", "Quiet", "judge_access", "quiet"]

#: access steps in a row, refused at every page while the mm was quiet, before the driver is judged stuck
REPEATS = 2

#: the callbacks whose running means an invalidation is under way (the recorder counts them while they run)
_INVALIDATING = frozenset({"invalidate_range_start", "invalidate_range_end", "invalidate_range"})


@dataclass(frozen=True, slots=True)
class Quiet:
    """A witness that ``mm`` was quiet for one driver at one instant (see the module doc)."""

    #: invalidations delivered to the driver so far (list starts and interval invalidates, every mm)
    delivered: int
    #: the mm's interval ``invalidate_seq`` (0 without interval notifiers)
    interval_seq: int


def quiet(world: JobWorld, driver: str, mm: MM) -> Quiet | None:
    """The witness of ``mm`` for ``driver`` now, or None when an invalidation of the mm is in flight for it (or
    ``driver`` keeps no device translations, so its refusals are not judged).

    In flight: the mm's interval state counts an active range, or one of the driver's subscriptions on the
    mm received a start and not yet its end, or is running a start or end callback now (the invariants
    recorder's open ranges and running callbacks). Only the driver's own subscriptions on the mm are looked
    at, never a list of every range or every thread, so the cost does not grow with the run.
    """
    if contract.DEVICE_TRANSLATIONS not in world.exercisers[driver].capabilities or not mm.alive:
        return None
    container = mm.mmu_notifier_mm
    state = container.interval if container is not None else None
    if state is not None and state.active_invalidate_ranges:
        return None
    if container is not None:
        records = world.monitor.recorder.records
        for sub in list(container.by_ops.get(world.kernel.drivers.ops_of(driver), ())):
            record = records.get(id(sub))
            if record is not None and record.sub is sub and (
                record.open_ranges or not _INVALIDATING.isdisjoint(list(record.running))
            ):
                return None
    return Quiet(sum(world.stats[driver].invalidations.values()), state.invalidate_seq if state else 0)


def judge_access(world: JobWorld, driver: str, mm: MM, before: Quiet | None, served: int, refused: int) -> None:
    """One access step of ``driver`` on ``mm`` is over: ``served`` pages got a frame, ``refused`` pages got
    "retry" (``None``); ``before`` is :func:`quiet` taken before its first page.

    A step refused at every page while the mm stayed quiet throughout counts towards :data:`REPEATS`; a
    served page resets the count. The violation is filed under ``driver`` once, with the quiescent point.
    """
    key = (driver, id(mm))
    streaks = world.refused_streaks
    if served:
        streaks.pop(key, None)
        return
    if not refused or before is None or quiet(world, driver, mm) != before:
        return
    streaks[key] = count = streaks.get(key, 0) + 1
    if count < REPEATS or driver in world.stuck:
        return
    world.stuck.add(driver)
    record(world, driver, InvariantViolation(
        PAIRING,
        f"{driver} refused every device access of mm {mm.id} in {count} access steps in a row although every "
        f"invalidation of it had ended (none in flight, none started meanwhile): its invalidate_range_start "
        f"left state that its invalidate_range_end did not undo, so the device can never translate again "
        f"(seen at quiescent point {world.steps})",
    ))
