"""A driver for the core's tests that records every callback it receives."""

from __future__ import annotations

import errno
from typing import Any

import mmu_notifier as mn


class RecordingSub(mn.MMUNotifier):
    """A subscription that remembers what happened to it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, ...]] = []


class RecordingDriver(mn.Driver):
    """Implements every callback and appends ``(callback, subscription, details)`` to ``log``.

    ``refuse_nonblock`` makes it refuse non-blockable starts with -EAGAIN.
    """

    name = "recording"
    version = "1.0"

    def __init__(self, config: mn.DriverConfig | None = None, *, refuse_nonblock: bool = False) -> None:
        super().__init__(config)
        self.refuse_nonblock = refuse_nonblock
        self.log: list[tuple[Any, ...]] = []
        self.allocated: list[RecordingSub] = []
        self.freed: list[int] = []
        self.young = 0

    def _note(self, *entry: Any) -> None:
        self.log.append(entry)

    @mn.hookimpl
    def alloc_notifier(self, mm: mn.MM) -> RecordingSub:
        sub = RecordingSub()
        self.allocated.append(sub)
        self._note("alloc", mm.id)
        return sub

    @mn.hookimpl
    def free_notifier(self, subscription: RecordingSub) -> None:
        self.freed.append(id(subscription))
        self._note("free", id(subscription))

    @mn.hookimpl
    def release(self, subscription: RecordingSub, mm: mn.MM) -> None:
        self._note("release", id(subscription), mm.id)

    @mn.hookimpl
    def invalidate_range_start(self, subscription: RecordingSub, range: mn.Range) -> int:
        self._note("start", id(subscription), range.event, range.start, range.end, range.blockable)
        if self.refuse_nonblock and not range.blockable:
            return -errno.EAGAIN
        return 0

    @mn.hookimpl
    def invalidate_range_end(self, subscription: RecordingSub, range: mn.Range) -> None:
        self._note("end", id(subscription), range.event, range.start, range.end)

    @mn.hookimpl
    def invalidate_range(self, subscription: RecordingSub, mm: mn.MM, start: int, end: int) -> None:
        self._note("invalidate_range", id(subscription), start, end)

    @mn.hookimpl
    def clear_flush_young(self, subscription: RecordingSub, mm: mn.MM, start: int, end: int) -> int:
        self._note("clear_flush_young", id(subscription), start, end)
        return self.young

    @mn.hookimpl
    def clear_young(self, subscription: RecordingSub, mm: mn.MM, start: int, end: int) -> int:
        self._note("clear_young", id(subscription), start, end)
        return self.young

    @mn.hookimpl
    def test_young(self, subscription: RecordingSub, mm: mn.MM, address: int) -> int:
        self._note("test_young", id(subscription), address)
        return self.young

    @mn.hookimpl
    def change_pte(self, subscription: RecordingSub, mm: mn.MM, address: int, pte: mn.PTE) -> None:
        self._note("change_pte", id(subscription), address, pte.pfn, mm.page_table.lookup(address >> mm.page_shift))

    def calls(self, kind: str) -> list[tuple[Any, ...]]:
        """The log entries of one callback kind."""
        return [entry for entry in self.log if entry[0] == kind]
