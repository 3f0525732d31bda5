"""Leak checks: once every attach is gone and ``synchronize`` ran, nothing is left behind (inv. 6).

What kmemleak and the mm reference counts would tell a driver author: a
subscription still allocated (a get without its put), a device translation
kept after the last detach, an ``mm_users``/``mm_count`` pin never dropped, an
exited mm whose ``mm_struct`` was never freed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmu_notifier.invariants.violations import LEAK, InvariantViolation, subscription_label
from mmu_notifier.kmem import is_freed
from mmu_notifier.notifier import MMUNotifier

if TYPE_CHECKING:
    from mmu_notifier.invariants.recorder import Recorder
    from mmu_notifier.mm import MM


@dataclass(eq=False)
class TrackedMM:
    """An address space the monitor watches, with its reference counts when it started watching."""

    mm: MM
    users: int
    count: int


def check_leaks(recorder: Recorder, held: Iterable[MMUNotifier] = ()) -> list[InvariantViolation]:
    """Every allocated subscription not in ``held`` was freed; call after synchronize."""
    keep = {id(s) for s in held}
    found: list[InvariantViolation] = []
    with recorder.lock:
        for rec in recorder.records.values():
            sub = rec.sub
            if not rec.allocated or is_freed(sub) or id(sub) in keep:
                continue
            found.append(InvariantViolation(
                LEAK,
                f"{subscription_label(sub)} (users={sub.users}, linked={sub.linked}) is still allocated though no "
                f"attach holds it and synchronize ran: a get without its put?",
            ))
    return found


def check_detached_translations(mm: MM, translations: Mapping[int, int], driver: str) -> list[InvariantViolation]:
    """Every attach of ``driver`` on the live ``mm`` was detached: its device translates nothing of it."""
    if not translations:
        return []
    return [InvariantViolation(
        LEAK,
        f"every attach of {driver} on mm {mm.id} was detached but the device still translates "
        f"{len(translations)} page(s) of it: a driver must drop its translations before put",
    )]


def check_refcounts(
    tracked_mms: Iterable[TrackedMM], attached: Callable[[MM], bool]
) -> list[InvariantViolation]:
    """Each tracked mm nothing is attached to is back to the reference counts it had before (inv. 6).

    Call after ``synchronize``. ``attached(mm)`` says whether an attach is
    still held on ``mm`` (then its pins are legitimately taken). A live mm must
    have its ``mm_users``/``mm_count`` as when it was first tracked; an exited
    one must have been freed.
    """
    found: list[InvariantViolation] = []
    for tracked in tracked_mms:
        mm = tracked.mm
        if attached(mm):
            continue
        if mm.mmu_notifier_mm is not None and mm.mmu_notifier_mm.subscriptions:
            continue  # still linked: the registration check judges whether it may be
        if mm.alive:
            if mm.mm_users.value != tracked.users or mm.mm_count.value != tracked.count:
                found.append(InvariantViolation(
                    LEAK,
                    f"mm {mm.id}: mm_users={mm.mm_users.value} mm_count={mm.mm_count.value} after every attach "
                    f"was detached and synchronize ran; they were {tracked.users} and {tracked.count} before "
                    f"(a pin taken with mmget/mmgrab was never dropped)",
                ))
        elif not mm.freed:
            found.append(InvariantViolation(
                LEAK,
                f"mm {mm.id} exited, nothing is attached and synchronize ran, but its mm_struct was not freed: "
                f"mm_count={mm.mm_count.value} (a registration or mmgrab pin was never dropped)",
            ))
    return found
