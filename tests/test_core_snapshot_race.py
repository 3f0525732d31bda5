"""A list walker's snapshot on OS threads: whole, whatever the writer on another thread does meanwhile.

Walkers read ``MMUNotifierMM.subscriptions`` without the lock, as RCU walkers do; on OS threads (the main job's
threads mode) the GIL can pass to a writer in the middle of building the snapshot when the snapshot's own
allocation runs the garbage collector and the collector runs Python code. The test makes that happen at once:
a collection at nearly every allocation, and a collector callback that links another subscription, as the
writer would. Building the tuple straight from the live dict then raised "dictionary changed size during
iteration" (the background thread's ``clear_flush_young`` walk in the threads mode, while a process attached).

That is CPython 3.11's collector, which runs inside an allocation. From 3.12 on it runs only between bytecodes
(the eval breaker), never inside the C-level copy, so no writer can land while the snapshot is built; the test
then checks that the snapshot is the list as it was.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

from mmu_notifier.notifier import MMUNotifierMM

#: more members than the interpreter keeps spare tuples for, so the snapshot's tuple is a fresh allocation
MEMBERS = 40


class _Ops:
    linked = 0


class _Kept:
    """An object the collector counts (a class instance: never from a free list, as small lists and tuples are)."""


class _Sub:
    def __init__(self, ops: _Ops) -> None:
        self.ops = ops
        self.linked = False


def test_a_snapshot_is_the_list_before_or_after_a_link_that_lands_while_it_is_built() -> None:
    ops = _Ops()
    container = MMUNotifierMM()
    members = [_Sub(ops) for _ in range(MEMBERS)]
    for sub in members:
        container.link(sub)
    bump = _Sub(ops)
    container.link(bump)  # a change: the next read builds a new snapshot
    container.unlink(bump)
    landed: list[_Sub] = []
    kept: list[_Kept] = []
    armed = [False]

    def writer(phase: str, info: dict[str, Any]) -> None:
        # A collection at every allocation of a tracked object: the collector runs when its allocation count
        # passes the threshold (1 at the least) and resets the count as it runs; two objects allocated and kept
        # as each collection stops (the collector then frees the dict it passed to its callbacks, one less)
        # leave the count at 1, and the next counted allocation runs the collector again.
        if not armed[0] or len(landed) >= 8:
            return
        if phase == "start":  # the writer on the other thread gets the GIL: it links a new subscription
            sub = _Sub(ops)
            container.link(sub)
            landed.append(sub)
        else:
            kept.extend((_Kept(), _Kept()))

    threshold = gc.get_threshold()
    gc.collect()
    gc.callbacks.append(writer)
    gc.set_threshold(1)
    try:
        kept.append(_Kept())  # the count at 1 (see the writer)
        armed[0] = True
        snapshot = container.subscriptions
        armed[0] = False
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(writer)
    if sys.version_info < (3, 12):  # the collector runs inside allocations (see the module docstring)
        assert landed, "no collection ran while the snapshot was built"
    every = members + landed
    # newest first, and exactly the members of one moment: the original ones and a prefix of the late ones
    assert any(snapshot == tuple(reversed(every[: MEMBERS + k])) for k in range(len(landed) + 1)), len(snapshot)
    assert container.subscriptions == tuple(reversed(every))
