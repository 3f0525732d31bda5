"""End-of-run checks every scenario shares: the kernel itself stayed clean.

A scenario's own checks judge its driver (everything freed, the device
coherent); whether the kernel logged a WARN (a bad return value, a put with
no users ...) or a deferred callback (``free_notifier`` after a grace period,
a work item) raised is the same question for every scenario, so it is
answered here once, for the built-ins, every plugin and a third party's
scenarios alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mmu_notifier.explore import Violation

if TYPE_CHECKING:
    from mmu_notifier.kernel import Kernel

__all__ = ["kernel_clean"]


def kernel_clean(kernel: Kernel, allow: Callable[[str], bool] | None = None) -> None:
    """Raise if ``kernel`` is not clean at the end of a run: the check :func:`mmu_notifier.invariants.check_kernel`
    makes, in the form the explorer reports.

    The first exception a deferred callback raised (``kernel.bugs``) is raised again as it is, so a use after
    free in a ``free_notifier`` stays a use after free in the finding; otherwise the first WARN the kernel
    logged is a :class:`~mmu_notifier.explore.Violation` ("kernel WARN: ..."). ``allow`` names the WARNs a
    scenario expects (a WARN for which it returns True is not a violation), e.g. a refusal the scenario
    provokes on purpose. Use it as a check::

        run.check(lambda: kernel_clean(kernel))
    """
    if kernel.bugs:
        raise kernel.bugs[0]
    for warning in kernel.warnings:
        if allow is None or not allow(warning):
            raise Violation(f"kernel WARN: {warning}")
