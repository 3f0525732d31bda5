"""Registration checks: one linked subscription per (driver, mm), shared by every attach (inv. 1, 4).

Under get/put every attach of a driver on an mm holds the same subscription,
``users`` counts the attaches, and the last detach unlinks it, so the next
attach gets a fresh one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mmu_notifier.invariants.violations import ALLOC_FREE, REGISTRATION, InvariantViolation, subscription_label
from mmu_notifier.kmem import is_freed
from mmu_notifier.notifier import MMUNotifier

if TYPE_CHECKING:
    from mmu_notifier.mm import MM
    from mmu_notifier.plugins import MMUNotifierOps


def check_registration(
    mm: MM, ops: MMUNotifierOps, held: Sequence[MMUNotifier], *, by_exit: bool = False
) -> list[InvariantViolation]:
    """One linked subscription of ``ops`` on ``mm``, shared by every attach in ``held`` (inv. 1).

    ``held`` lists the subscription of each attach still held on ``mm``. For
    a get/put driver each attach holds exactly one user and the last detach
    unlinks; with ``by_exit`` (:data:`mmu_notifier.exerciser.DETACH_BY_EXIT`)
    the one reference lives until the mm exits, whatever the attaches do.
    """
    found: list[InvariantViolation] = []
    container = mm.mmu_notifier_mm
    linked = [s for s in (container.subscriptions if container else ()) if s.ops is ops and s.linked]
    if len(linked) > 1:
        found.append(InvariantViolation(REGISTRATION, f"mm {mm.id} has {len(linked)} linked subscriptions of "
                                                      f"driver {ops.name}; get/put keeps one per (driver, mm)"))
    if not mm.alive:
        if linked:
            found.append(InvariantViolation(
                REGISTRATION, f"mm {mm.id} exited but driver {ops.name} is still linked on it"
            ))
        return found
    distinct = {id(s): s for s in held}
    if len(distinct) > 1:
        found.append(InvariantViolation(REGISTRATION, f"{len(held)} attaches on mm {mm.id} hold {len(distinct)} "
                                                      f"different subscriptions of driver {ops.name}; they must "
                                                      f"share one"))
    if not held:
        if linked and not by_exit:
            found.append(InvariantViolation(
                REGISTRATION,
                f"driver {ops.name} is still linked on mm {mm.id} ({subscription_label(linked[0])}, "
                f"users={linked[0].users}) though every attach was detached: a get without its put?",
            ))
        return found
    sub = held[0]
    if is_freed(sub):
        found.append(InvariantViolation(ALLOC_FREE, f"an attach on mm {mm.id} holds {sub!r}, which was freed"))
        return found
    if not sub.linked or (container is not None and container.find(ops) is not sub):
        found.append(InvariantViolation(REGISTRATION, f"the subscription held by the attaches on mm {mm.id} "
                                                      f"({subscription_label(sub)}) is not the one linked there"))
    if not by_exit and sub.users != len(held):
        found.append(InvariantViolation(REGISTRATION, f"{subscription_label(sub)} has users={sub.users} but "
                                                      f"{len(held)} attach(es) hold it: each attach must take exactly "
                                                      f"one reference (get) and each detach drop one (put)"))
    return found
