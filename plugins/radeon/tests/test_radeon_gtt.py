"""The GTT range manager on real OS threads: a bind or unbind is one indivisible step, as under the kernel's
manager spinlock (the intermittent failure of the main job's 10,000 processes on 8 threads)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from itertools import pairwise

from mmu_notifier_radeon.device import Gtt

#: how long the first binder waits for the second to get through (it never can once the bind is atomic)
_OVERTAKE_SECONDS = 0.3


class _Overtaken(dict[int, int]):
    """A GTT's range table that lets another OS thread run ``other`` to its end (or for a while) at the first
    lookup of the first-fit scan: the GIL switch in the middle of a bind, forced at the worst place."""

    def __init__(self, ranges: dict[int, int], other: Callable[[], None]) -> None:
        super().__init__(ranges)
        self.other: Callable[[], None] | None = other
        self.thread: threading.Thread | None = None

    def __getitem__(self, key: int) -> int:
        other, self.other = self.other, None
        if other is not None:
            self.thread = threading.Thread(target=other, name="second-binder", daemon=True)
            self.thread.start()
            self.thread.join(_OVERTAKE_SECONDS)  # runs to its end unless the bind excludes it
        return super().__getitem__(key)


def _disjoint(gtt: Gtt) -> bool:
    spans = sorted(gtt.ranges.items())
    return all(start + count <= following for (start, count), (following, _) in pairwise(spans))


def test_two_threads_binding_at_once_get_separate_ranges() -> None:
    gtt = Gtt("test.gtt", 16)
    assert gtt.bind([100]) == 0  # a range the scan has to look up, so it is not empty
    second: list[int] = []
    ranges = _Overtaken(gtt.ranges, lambda: second.append(gtt.bind([300, 301])))
    gtt.ranges = ranges
    first = gtt.bind([200, 201])
    assert ranges.thread is not None
    ranges.thread.join(5)
    assert not ranges.thread.is_alive() and len(second) == 1
    # before the fix both got offset 1: the second thread's frames were overwritten by the first's, and the
    # second unbind of offset 1 raised KeyError with the BO's pages still pinned
    assert first != second[0], (first, second)
    assert _disjoint(gtt), gtt.ranges
    assert [gtt.entries[first + i] for i in range(2)] == [200, 201]
    assert [gtt.entries[second[0] + i] for i in range(2)] == [300, 301]
    gtt.unbind(first)
    gtt.unbind(second[0])
    gtt.unbind(0)
    assert gtt.ranges == {} and gtt.entries == {}


def test_an_unbind_and_a_bind_at_once_never_lose_a_range() -> None:
    gtt = Gtt("test.gtt", 16)
    assert gtt.bind([100, 101]) == 0
    assert gtt.bind([102]) == 2
    # the bind scans [0, 2); the other thread unbinds 0 in the middle of the scan
    ranges = _Overtaken(gtt.ranges, lambda: gtt.unbind(0))
    gtt.ranges = ranges
    offset = gtt.bind([200, 201])
    assert ranges.thread is not None
    ranges.thread.join(5)
    assert not ranges.thread.is_alive()
    assert _disjoint(gtt), gtt.ranges
    assert sorted(gtt.ranges) == sorted([2, offset])
    assert gtt.entries == {2: 102, offset: 200, offset + 1: 201}
