"""The kernel-clean check: what the kernel itself logged during a run.

A WARN the core issued (a bad return value, a put with no users ...) or an
exception raised by a deferred callback (``free_notifier`` run after a grace
period) is a broken invariant whatever the driver's own checks say.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmu_notifier.invariants.violations import KERNEL, InvariantViolation

if TYPE_CHECKING:
    from mmu_notifier.kernel import Kernel


def check_kernel(kernel: Kernel) -> list[InvariantViolation]:
    """The kernel logged no WARN and no deferred callback raised."""
    found = [InvariantViolation(KERNEL, f"kernel WARN: {w}") for w in kernel.warnings]
    found += [
        InvariantViolation(KERNEL, f"a deferred callback (free_notifier) raised {type(e).__name__}: {e}")
        for e in kernel.bugs
    ]
    return found
