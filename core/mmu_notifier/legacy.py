"""Pre-series (Linux 5.3) calls, kept only to model old drivers. Not part of the main API.

Patch 11 of the get/put series removed ``mmu_notifier_unregister_no_release``
and ``mmu_notifier_call_srcu`` once amdkfd, their last user, moved to
``mmu_notifier_put``. Their contract was that the caller itself waits for a
grace period (``call_srcu`` or ``synchronize``) before freeing the notifier;
forgetting to is the use-after-free of patch 09. This module lets a scenario
or a legacy driver scheme write exactly that code, so the explorer can show
the race and its absence under get/put.
"""

from __future__ import annotations

from collections.abc import Callable

from mmu_notifier.errors import MisuseError
from mmu_notifier.kernel import Kernel
from mmu_notifier.kmem import kfree as kfree  # deprecated here: use mmu_notifier.kmem.kfree (kept for one release)
from mmu_notifier.log import LOG
from mmu_notifier.mm import MM
from mmu_notifier.notifier import MMUNotifier


def unregister_no_release(sub: MMUNotifier, mm: MM) -> None:
    """``mmu_notifier_unregister_no_release``: unlink and drop the mm pin; no release, no wait.

    Walkers that already hold ``sub`` keep using it: the caller must not free
    it before a grace period has passed.
    """
    if sub.mm is not mm:
        raise MisuseError(f"unregister_no_release of {sub!r} from mm {mm.id}, where it was never registered")
    container = mm.mmu_notifier_mm
    assert container is not None
    with container.lock:
        container.unlink(sub)
    if LOG.on:
        LOG.event("notifier.unlink", mm=mm.id, driver=sub.ops.name if sub.ops else "?", by="unregister_no_release")
    mm.mmdrop()


def call_srcu(kernel: Kernel, callback: Callable[[], None]) -> None:
    """``mmu_notifier_call_srcu``: run ``callback`` after a grace period of the notifier SRCU."""
    kernel.srcu.call(callback)

