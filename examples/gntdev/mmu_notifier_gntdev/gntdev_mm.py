"""The per-mm object of the conversion (:class:`GntdevMM`) and the open file (``struct gntdev_priv``).

In 5.4 each open file embedded its own notifier; the conversion moves the
notifier to one object per mm, shared by every open file of that mm, made by
``alloc_notifier`` on the first ``mmu_notifier_get`` and freed by
``free_notifier`` after the last ``put`` and a grace period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mmu_notifier import sync
from mmu_notifier.notifier import MMUNotifier

if TYPE_CHECKING:
    from mmu_notifier.mm import MM
    from mmu_notifier_gntdev.device import GrantMap


class GntdevMM(MMUNotifier):
    """The per-mm object of the conversion: the notifier every open file of one mm shares.

    ``lock`` is the 5.4 per-file ``priv->lock`` moved here (a mutex: the
    blockable start sleeps on it, the non-blockable start only trylocks it).
    ``active`` and ``seq`` live under the spinlock ``range_lock`` because the
    end of a non-blockable range must not sleep.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = sync.Mutex("gntdev_mm.lock")
        self.range_lock = sync.SpinLock("gntdev_mm.range_lock")
        self.files: list[GntdevPriv] = []
        #: invalidations between their start and end
        self.active = 0
        #: bumped by every start, so a mapping that raced one is not recorded
        self.seq = 0
        #: release ran: the address space is gone, map nothing more
        self.dead = False


@dataclass(eq=False)
class GntdevPriv:
    """``struct gntdev_priv``: one open file of ``/dev/xen/gntdev``."""

    gmm: GntdevMM
    mm: MM
    maps: list[GrantMap] = field(default_factory=list)
