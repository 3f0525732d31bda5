"""Invalidation checks: every start the core delivered is followed by its end (inv. 14, 15).

The judgments made while a range is in flight (an end without its start, a
start delivered twice, a refusal of a blockable range, a sleep in a
non-blockable one) are the recorder's; this module judges what is left open
once the run is quiescent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmu_notifier.invariants.violations import PAIRING, InvariantViolation, subscription_label
from mmu_notifier.kmem import is_freed

if TYPE_CHECKING:
    from mmu_notifier.invariants.recorder import Recorder


def check_pairing(recorder: Recorder) -> list[InvariantViolation]:
    """Every delivered start was ended, except after a refused non-blockable start (inv. 14, 15).

    Call only when no invalidation is in flight. Forgiven, and forgotten:
    starts of refused ranges (5.4 sends no end after a refusal), and starts
    on a subscription unlinked before the end walked the list (its last put
    or mm teardown came in between: the end's walk no longer sees it, in
    the kernel as here, and the driver dropped its translations before the
    put or in release anyway).
    """
    found: list[InvariantViolation] = []
    with recorder.lock:
        for rec in recorder.records.values():
            gone = is_freed(rec.sub) or not rec.sub.linked
            for key, range in list(rec.open_ranges.items()):
                state = recorder.ranges.get(key)
                del rec.open_ranges[key]
                recorder._closed(range)
                if state is not None:
                    state.open -= 1
                if gone or (state is not None and state.refused):
                    continue
                found.append(
                    InvariantViolation(PAIRING, f"{subscription_label(rec.sub)} received invalidate_range_start "
                                                f"for {range!r} but never its end")
                )
        recorder.ranges = {key: state for key, state in recorder.ranges.items() if state.open > 0}
    return found
