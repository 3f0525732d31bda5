"""What a check returns: the check names, their meaning, and one broken invariant.

Every check of :mod:`mmu_notifier.invariants` returns a list of
:class:`InvariantViolation` (empty when the invariant holds), tagged with one
of the check names below so that a report can say what the invariant means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mmu_notifier.kmem import is_freed
from mmu_notifier.notifier import MMUNotifier

# -- check names -----------------------------------------------------------------

#: one subscription per (driver, mm), shared by every attach; a fresh one after the last detach
REGISTRATION = "one-subscription-per-mm"
#: alloc_notifier and free_notifier paired exactly once, the free after a grace period
ALLOC_FREE = "alloc-free-paired"
#: nothing allocated stays allocated once every attach was detached and synchronize ran
LEAK = "no-leak"
#: start and end paired per (subscription, range)
PAIRING = "start-end-pairing"
#: release at most once, exactly once at exit while attached; no callback after it
RELEASE = "release"
#: callbacks of a non-blockable range never sleep; they complete or refuse with -EAGAIN
NONBLOCK = "non-blockable"
#: after an invalidation ends, no device translation in its range names a stale frame
COHERENCE = "coherence"
#: after exit (and, without a release callback, after the last detach) the device translates nothing of that mm
EXIT_COHERENCE = "exit-coherence"
#: the kernel logged no WARN and no deferred callback raised
KERNEL = "kernel-clean"
#: the capabilities an exerciser declares match what the driver does
CAPABILITIES = "capabilities"
#: a callback raised an exception the kernel would not survive
CALLBACKS = "callbacks"

#: Every check name with what a violation of it means (printed by the kit and the guide).
CHECKS: dict[str, str] = {
    REGISTRATION: "every attach on an mm must share the driver's one linked subscription there (get, not a "
    "second register), with users == number of attaches; after the last detach the next attach must get a "
    "fresh subscription (inv. 1, 4)",
    ALLOC_FREE: "every subscription alloc_notifier returned must reach free_notifier exactly once, only after its "
    "last put and a grace period (no callback still running on it), and by synchronize at the latest; the "
    "driver must never free it itself (inv. 2, 3, 12)",
    LEAK: "once every attach was detached and synchronize ran, nothing the driver allocated may still be live, "
    "the device must translate nothing, and the mm's reference counts must be back where they started (inv. 6)",
    PAIRING: "every start the core delivered must be followed by its end (except after a refused non-blockable "
    "start), never an end without a start; and once every invalidation ended, the device must be able to "
    "translate again: whatever the driver's start blocked, its end must unblock (inv. 14, 15)",
    RELEASE: "release runs at most once per subscription, exactly once when the mm exits while attached, and no "
    "callback starts on a subscription after its release (inv. 9, 10, 13)",
    NONBLOCK: "in a non-blockable range (OOM reaper) a callback must not sleep (no mutex, no wait, no "
    "synchronize): it completes or returns -EAGAIN; only drivers declaring refuses_nonblock may refuse (inv. 15)",
    COHERENCE: "after any invalidation ends, no device translation in its range may name a frame the CPU page "
    "table no longer maps there: the driver must drop it in its start (or end) callback",
    EXIT_COHERENCE: "after the mm exits, the device must hold no translation of it (a driver without a release "
    "callback: once every attach on it was detached); a device access after exit must not translate anything",
    KERNEL: "the kernel must log no WARN (a bad return value, put with no users ...) and no deferred callback "
    "(free_notifier) may raise",
    CAPABILITIES: "the capabilities an exerciser declares must match the driver's hooks and behaviour",
    CALLBACKS: "a driver callback raised an exception",
}


@dataclass(frozen=True, slots=True)
class InvariantViolation:
    """One broken invariant: the check's name and what was expected and found."""

    check: str
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.message}"


def format_violations(violations: Sequence[InvariantViolation]) -> str:
    """A readable report: one violation per line, with the meaning of each check that failed."""
    lines = [str(v) for v in violations]
    for name in dict.fromkeys(v.check for v in violations):
        if name in CHECKS:
            lines.append(f"  ({name}: {CHECKS[name]})")
    return "\n".join(lines)


def subscription_label(sub: MMUNotifier) -> str:
    """A description of a subscription for a message, which never touches a freed one."""
    if is_freed(sub):
        return repr(sub)
    ops = sub.ops
    mm = sub.mm
    return f"{type(sub).__name__}@{id(sub):#x} of driver {ops.name if ops else '?'} on mm {mm.id if mm else '?'}"
