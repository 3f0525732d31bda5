"""Per-driver counters of a run, and the tracer plugin that fills them.

The tracer is a non-driver pluggy plugin whose wrappers see every driver's
callbacks (the core's wrapper mechanism); the runner adds what only the user
path sees (subscriptions met through attach, peak users, device faults).
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from mmu_notifier.hookspecs import hookimpl
from mmu_notifier.notifier import MMUNotifier
from mmu_notifier.range import Range


@dataclass
class DriverStats:
    """What one driver did during a run."""

    #: every subscription met through attach (kept alive, so identity stays unique)
    subscriptions: set[MMUNotifier] = field(default_factory=set)
    freed: int = 0
    peak_users: int = 0
    invalidations: Counter[str] = field(default_factory=Counter)
    refusals: int = 0
    releases: int = 0
    device_faults: int = 0
    retries: int = 0
    violations: list[str] = field(default_factory=list)
    #: violations of checks the driver declares as known kernel behaviour (``known_kernel_violations``)
    known: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "allocated": len(self.subscriptions),
            "freed": self.freed,
            "peak_users": self.peak_users,
            "invalidations": dict(sorted(self.invalidations.items())),
            "nonblock_refusals": self.refusals,
            "releases": self.releases,
            "device_faults": self.device_faults,
            "retries": self.retries,
            "violations": list(self.violations),
            "known_kernel_behaviour": list(self.known),
        }


class StatsTracer:
    """Counts callbacks per driver through pluggy wrappers."""

    def __init__(self, stats: dict[str, DriverStats]) -> None:
        self.stats = stats
        self.callbacks = 0

    @hookimpl(wrapper=True)
    def invalidate_range_start(self, subscription: MMUNotifier, range: Range) -> Generator[None, int, int]:
        stats = self.stats[subscription.ops.name]
        result = yield
        self.callbacks += 1
        stats.invalidations[range.event.name] += 1
        if result == -errno.EAGAIN:
            stats.refusals += 1
        return result

    @hookimpl(wrapper=True)
    def release(self, subscription: MMUNotifier, mm: Any) -> Generator[None, None, None]:
        self.stats[subscription.ops.name].releases += 1
        self.callbacks += 1
        return (yield)

    @hookimpl(wrapper=True)
    def free_notifier(self, subscription: MMUNotifier) -> Generator[None, None, None]:
        self.stats[subscription.ops.name].freed += 1  # read the name before the object is freed
        self.callbacks += 1
        return (yield)
