"""Teardown checks: every subscription is freed by the core, once, after its last put (inv. 2, 12).

A free while a callback still runs, a second free and a free of a linked
subscription are judged by the recorder as they happen; release at most once
and no callback after it (inv. 9, 10, 13) likewise. This module judges, at a
quiescent point, frees behind the core's back and, once ``synchronize`` ran,
subscriptions whose last put was never followed by their free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmu_notifier.invariants.violations import ALLOC_FREE, InvariantViolation, subscription_label
from mmu_notifier.kmem import is_freed

if TYPE_CHECKING:
    from mmu_notifier.invariants.recorder import Recorder


def check_frees(recorder: Recorder, settled: bool = False) -> list[InvariantViolation]:
    """No subscription freed behind the core's back; with ``settled`` (after synchronize), every
    unlinked subscription without users was freed (inv. 2, 12)."""
    found: list[InvariantViolation] = []
    with recorder.lock:
        for rec in recorder.records.values():
            sub = rec.sub
            if is_freed(sub):
                if rec.frees == 0 and rec.allocated:
                    found.append(InvariantViolation(
                        ALLOC_FREE,
                        f"{sub!r} (driver {rec.driver}, mm {rec.mm_id}) was freed without free_notifier: the "
                        f"driver freed its own subscription instead of leaving it to the free after put",
                    ))
                continue
            if settled and rec.allocated and sub.mm is not None and not sub.linked and sub.users == 0:
                found.append(InvariantViolation(
                    ALLOC_FREE,
                    f"{subscription_label(sub)} had its last put but was not freed after synchronize (inv. 12)",
                ))
    return found
