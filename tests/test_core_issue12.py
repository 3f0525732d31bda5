"""Issue 12: nested invalidation, module unload, fault injection and the fidelity fixes.

Each test names the kernel function whose behaviour it checks.
"""

from __future__ import annotations

from typing import Any

from recording import RecordingDriver

import mmu_notifier as mn

PAGE = 4096
HUGE = 512 * PAGE


class NestingDriver(RecordingDriver):
    """Records the depth of invalidations in flight in the task when each start and end arrives."""

    name = "nesting"

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.trace: list[tuple[Any, ...]] = []

    @mn.hookimpl
    def invalidate_range_start(self, subscription: Any, range: mn.Range) -> int:
        self.depth += 1
        self.trace.append(("start", self.depth, range.start, range.end, mn.sync.current().name))
        assert range.event is mn.Event.CLEAR
        return 0

    @mn.hookimpl
    def invalidate_range_end(self, subscription: Any, range: mn.Range) -> None:
        self.trace.append(("end", self.depth, range.start, range.end, mn.sync.current().name))
        self.depth -= 1

    @mn.hookimpl
    def invalidate_range(self, subscription: Any, mm: mn.MM, start: int, end: int) -> None:
        self.trace.append(("invalidate_range", self.depth, start, end, mn.sync.current().name))


def test_zap_page_range_splitting_a_huge_page_nests_a_second_invalidation(kernel):
    """``zap_page_range`` -> ``__split_huge_pmd``: a start/only_end pair inside the outer one, same task."""
    driver = NestingDriver()
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    base = mm.mmap(2 * HUGE, addr=1 << 33)
    mm.fault(base + HUGE + PAGE, write=True)
    mn.get(driver, mm)
    mm.madvise_dontneed(base + HUGE + PAGE, 4 * PAGE, split_huge_page=True)
    outer = (base + HUGE + PAGE, base + HUGE + 5 * PAGE)
    inner = (base + HUGE, base + 2 * HUGE)
    task = mn.sync.current().name
    assert driver.trace == [
        ("start", 1, *outer, task),
        ("start", 2, *inner, task),
        ("end", 2, *inner, task),  # only_end: no invalidate_range for the split
        ("invalidate_range", 1, *outer, task),
        ("end", 1, *outer, task),
    ]
    assert mm.page_table.lookup((base + HUGE + PAGE) >> mm.page_shift) is None


def test_madvise_without_split_does_not_nest(kernel):
    driver = NestingDriver()
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    base = mm.mmap(4 * PAGE)
    mn.get(driver, mm)
    mm.madvise_dontneed(base, PAGE)
    assert [entry[:2] for entry in driver.trace] == [("start", 1), ("invalidate_range", 1), ("end", 1)]


def test_nested_split_range_is_clipped_to_the_vma(kernel):
    driver = NestingDriver()
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    base = mm.mmap(8 * PAGE, addr=(1 << 33) + 2 * PAGE)
    mn.get(driver, mm)
    mm.madvise_dontneed(base + PAGE, PAGE, split_huge_page=True)
    starts = [entry for entry in driver.trace if entry[0] == "start"]
    assert starts[1][2:4] == (base, base + 8 * PAGE)
