"""The mirror API: ``struct hmm_mirror``, ``hmm_mirror_register`` and ``hmm_mirror_unregister``.

A mirror is one driver-side binding to an address space (nouveau's
``nouveau_svmm``, amdgpu's ``amdgpu_mn``). Every mirror of an mm shares the
mm's one :class:`~mmu_notifier_hmm.hmm.Hmm`; each registered mirror holds one
reference on it, so in 5.4 its ``users`` equals the number of mirrors.

The scheme (5.4 get/put or the 5.3 kref) is that of the ``hmm`` driver loaded
into the mm's kernel, as ``mm/hmm.c`` is built into the kernel it runs in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, cast

from mmu_notifier import MM, MisuseError, Range

if TYPE_CHECKING:
    from mmu_notifier_hmm import HmmDriver
    from mmu_notifier_hmm.hmm import Hmm

#: The entry-point name of the driver: the model of the static ``hmm_mmu_notifier_ops``.
DRIVER_NAME = "hmm"


class HmmMirror(ABC):
    """``struct hmm_mirror`` with its ``struct hmm_mirror_ops`` as methods.

    ``hmm`` is set by :func:`mirror_register` and cleared by
    :func:`mirror_unregister`.
    """

    def __init__(self) -> None:
        self.hmm: Hmm | None = None

    @abstractmethod
    def sync_cpu_device_pagetables(self, range: Range) -> int:
        """The CPU page table is about to change in ``range``: drop device translations there.

        Called from the invalidation start under ``mirrors_sem`` (read).
        Return 0; for a non-blockable range (``not range.blockable``) the
        mirror must not sleep and returns ``-EAGAIN`` when it would have had to.
        """

    def release(self) -> None:  # noqa: B027 - an optional op: mirrors without one do nothing
        """The mm is going away: stop all device access to it.

        Optional. Called under ``mirrors_sem`` (read): must not call
        :func:`mirror_unregister`.
        """


def loaded_driver(mm: MM) -> HmmDriver:
    """The ``hmm`` driver loaded into ``mm``'s kernel; :class:`MisuseError` if none is."""
    return cast("HmmDriver", mm.kernel.drivers.ops_of(DRIVER_NAME).driver)


def mirror_register(mirror: HmmMirror, mm: MM) -> None:
    """``hmm_mirror_register``: bind ``mirror`` to ``mm``; the caller holds the mmap lock for write.

    Takes a reference on the mm's struct hmm (``mmu_notifier_get_locked`` in
    5.4, creating it on the first mirror) and adds the mirror at the head of
    its list. Errors of the get (EOVERFLOW, a failed allocation) propagate
    with nothing registered. A module using this must call
    ``mmu_notifier.synchronize`` when it unloads.
    """
    if not mm.mmap_lock.is_write_locked_by_current():
        raise MisuseError("hmm_mirror_register needs the mmap lock held for write by the caller")
    if mirror.hmm is not None:
        raise MisuseError(f"{mirror!r} is already registered")
    hmm = loaded_driver(mm).hmm_get_locked(mm)
    mirror.hmm = hmm
    hmm.mirrors_sem.down_write()
    hmm.mirrors.insert(0, mirror)
    hmm.mirrors_sem.up_write()


def mirror_unregister(mirror: HmmMirror) -> None:
    """``hmm_mirror_unregister``: unbind ``mirror`` and drop its reference (``mmu_notifier_put`` in 5.4).

    The mirror must have no range registered (the kernel documents this as
    forbidden; the model raises :class:`MisuseError` before changing
    anything). Its device must hold no translation any more: after the put,
    ``release`` may never come.
    """
    hmm = mirror.hmm
    if hmm is None:
        raise MisuseError(f"{mirror!r} is not registered")
    with hmm.ranges_lock:
        busy = sum(1 for range in hmm.ranges if range.mirror is mirror)
    if busy:
        raise MisuseError(f"hmm_mirror_unregister of {mirror!r} with {busy} range(s) still registered")
    hmm.mirrors_sem.down_write()
    hmm.mirrors.remove(mirror)
    hmm.mirrors_sem.up_write()
    mirror.hmm = None
    hmm.put_mirror()
