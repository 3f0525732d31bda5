"""The patch-09 race (amdkfd's v5.3 unwind) written for frontrun, for ``bench_startup.py``.

Thread A registers a notifier on the mm's list, unregisters it without a grace
period and frees it; thread B (reclaim) walks the list and calls each
notifier. The invariant fails when B touched the notifier after A freed it.
Plain Python objects, no mmu_notifier import: the same race, the other tool.

Run: ``python bench/frontrun_patch09.py`` (exit 0 when frontrun found the race).
"""

from __future__ import annotations

import sys


class Notifier:
    """A subscription: ``freed`` once A freed it; ``touched_after_free`` if B used it then."""

    def __init__(self) -> None:
        self.freed = False
        self.touched_after_free = False


class State:
    """The mm's notifier list, and whether A's notifier became visible."""

    def __init__(self) -> None:
        self.subscriptions: list[Notifier] = []
        self.notifier = Notifier()


def create_process(state: State) -> None:
    """A: register, then the failed init's unwind (unlink, no grace period, free)."""
    state.subscriptions = [state.notifier, *state.subscriptions]
    state.subscriptions = [s for s in state.subscriptions if s is not state.notifier]
    state.notifier.freed = True


def invalidate(state: State) -> None:
    """B: walk the list and call every notifier."""
    for sub in state.subscriptions:
        if sub.freed:
            sub.touched_after_free = True


def main() -> int:
    import frontrun

    result = frontrun.explore(
        setup=State,
        workers=[create_process, invalidate],
        invariant=lambda state: not state.notifier.touched_after_free,
        strategy="dpor",
    )
    found = not getattr(result, "property_holds", True)
    print(f"frontrun: race {'found' if found else 'not found'}")
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
