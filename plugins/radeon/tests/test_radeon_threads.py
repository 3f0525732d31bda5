"""radeon on real OS threads (the main job's threads mode): the GTT range manager's bind and unbind are each one
indivisible step, as under the kernel's manager spinlock (the intermittent failure of the main job's 10,000
processes on 8 threads); a check reading a process's translations from another thread survives the process
creating a BO meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from mmu_notifier_radeon.device import Gtt

Machine = Any  # conftest.Machine
Make = Callable[..., Machine]

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


class _SwitchInTheMiddle:
    """A BO-shaped entry of the device's per-mm index whose first read by the check runs ``other`` (what the
    process does at a GIL switch there) and then says it is not bound (it translates nothing)."""

    def __init__(self, other: Callable[[], None]) -> None:
        self.other: Callable[[], None] | None = other

    @property
    def bound(self) -> bool:
        other, self.other = self.other, None
        if other is not None:
            other()
        return False


def test_translations_read_while_the_process_creates_a_bo(machine: Make) -> None:
    m = machine()
    mm, a = m.process(4)
    file = m.rdev.open(mm)
    _, first = m.userptr(file, a, 2)
    made: list[int] = []
    switch = _SwitchInTheMiddle(lambda: made.append(m.userptr(file, a + 2 * m.page, 2)[0]))
    m.rdev.bos_of_mm[mm][switch] = None  # type: ignore[index]
    try:
        # before: "dictionary changed size during iteration" (the background thread's check on OS threads)
        seen = m.rdev.translations(mm)
    finally:
        del m.rdev.bos_of_mm[mm][switch]  # type: ignore[arg-type]
    assert len(made) == 1
    base = a // m.page
    assert seen == {base: first.pages[0], base + 1: first.pages[1]}  # the BOs of the moment the read began
    assert len(m.rdev.translations(mm)) == 4
    m.rdev.close(file)
    m.finish()
