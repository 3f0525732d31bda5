"""An interval-notifier driver for the core's tests: records every ``invalidate`` it receives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mmu_notifier as mn


class IntervalRecorder(mn.Driver):
    """Implements only ``invalidate``; appends ``(sub, event, start, end, blockable, cur_seq)`` to ``log``.

    It calls ``interval_set_seq`` unless ``set_seq`` is False, refuses
    non-blockable ranges when ``refuse_nonblock`` is set, and runs ``hook`` (if
    any) inside each call.
    """

    name = "interval-recorder"
    version = "1.0"
    required_hooks = ("invalidate",)

    def __init__(self, config: mn.DriverConfig | None = None, *, refuse_nonblock: bool = False,
                 set_seq: bool = True) -> None:
        super().__init__(config)
        self.refuse_nonblock = refuse_nonblock
        self.set_seq = set_seq
        self.log: list[tuple[Any, ...]] = []
        self.hook: Callable[[mn.MMUIntervalNotifier, mn.Range, int], None] | None = None

    @mn.hookimpl
    def invalidate(self, subscription: mn.MMUIntervalNotifier, range: mn.Range, cur_seq: int) -> bool:
        self.log.append((subscription, range.event, range.start, range.end, range.blockable, cur_seq))
        if self.refuse_nonblock and not range.blockable:
            return False
        if self.set_seq:
            mn.interval_set_seq(subscription, cur_seq)
        if self.hook is not None:
            self.hook(subscription, range, cur_seq)
        return True

    def hits(self, sub: mn.MMUIntervalNotifier) -> list[tuple[Any, ...]]:
        """The log entries of ``sub``."""
        return [entry for entry in self.log if entry[0] is sub]
