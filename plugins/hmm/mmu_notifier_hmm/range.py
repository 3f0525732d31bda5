"""The range API: ``struct hmm_range`` and ``hmm_range_register/unregister/wait_until_valid/valid/fault``.

A range tracks CPU page-table changes over ``[start, end)`` for one mirror:
every invalidation start that overlaps it clears ``valid``, and ``valid``
comes back only when no invalidation at all is in flight on the mm (the
struct hmm's ``notifiers`` count returns to zero). ``range_fault`` fills
``pfns`` from the CPU page table, faulting pages in as ``default_flags`` ask,
and reports ``EBUSY`` when it finds the range invalid.

The flag is a snapshot check, not a sequence: an invalidation that starts
and ends between ``range_fault`` and the driver's check leaves it ``True``
again. Linux 5.5 documented this hole and replaced the scheme with interval
notifiers; the device model (:mod:`mmu_notifier_hmm.device`) shows both.

``valid`` is read under ``ranges_lock`` here (the kernel reads it with
``READ_ONCE``): under sequential consistency both see the same values, and
the explorer then sees the read as dependent on the writers, which it needs
to explore every order of the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntFlag
from typing import TYPE_CHECKING

from mmu_notifier import (
    MM,
    BadAddressError,
    BusyError,
    InvalidArgumentError,
    MisuseError,
    MMUIntervalNotifier,
    interval_check_retry,
)
from mmu_notifier.errors import PermissionDeniedError

if TYPE_CHECKING:
    from mmu_notifier_hmm.hmm import Hmm
    from mmu_notifier_hmm.mirror import HmmMirror


class HmmPfnFlag(IntFlag):
    """What a driver asks ``range_fault`` for (``range->flags[HMM_PFN_VALID/WRITE]``).

    ``NONE`` only snapshots what is present (``HMM_FAULT_SNAPSHOT``);
    ``VALID`` faults absent pages in; ``VALID | WRITE`` also breaks COW and
    makes every page writable.
    """

    NONE = 0
    VALID = 1
    WRITE = 2


@dataclass(frozen=True, slots=True)
class HmmPfn:
    """One filled entry of ``range.pfns``: the frame and whether the CPU maps it writable."""

    pfn: int
    write: bool


@dataclass(eq=False)
class HmmRange:
    """``struct hmm_range``: ``[start, end)`` of the mirror's mm, page aligned.

    ``pfns`` has one entry per page after :func:`range_fault` (``None`` for
    ``HMM_PFN_NONE``: nothing mapped, or cleared after an error). ``hmm`` and
    ``mirror`` are set while the range is registered; ``valid`` is guarded by
    the struct hmm's ``ranges_lock``.

    5.5 ("mm/hmm: allow hmm_range to be used with a mmu_interval_notifier or
    hmm_mirror"): a range is never registered; the driver sets ``notifier``
    and ``notifier_seq`` (the result of ``mmu_interval_read_begin``) and
    :func:`range_fault` checks ``mmu_interval_check_retry`` instead of
    ``valid``.
    """

    start: int
    end: int
    default_flags: HmmPfnFlag = HmmPfnFlag.VALID
    pfns: list[HmmPfn | None] = field(default_factory=list)
    valid: bool = False
    hmm: Hmm | None = None
    mirror: HmmMirror | None = None
    notifier: MMUIntervalNotifier | None = None
    notifier_seq: int = 0


def _hmm(range: HmmRange) -> Hmm:
    """The struct hmm of a registered range (after unregister the kernel's pointer is poisoned)."""
    if range.hmm is None:
        raise MisuseError(f"{range!r} is not registered (hmm_range_unregister poisons range->hmm)")
    return range.hmm


def _mm(range: HmmRange) -> MM:
    """The mm ``range`` walks: its interval notifier's (5.5) or its struct hmm's (5.4 and earlier)."""
    if range.notifier is not None:
        if range.notifier.mm is None:
            raise MisuseError(f"{range!r}: its interval notifier {range.notifier!r} is not inserted")
        return range.notifier.mm
    return _hmm(range).address_space


def _still_valid(range: HmmRange) -> bool:
    """5.5: no invalidation since ``notifier_seq`` (``mmu_interval_check_retry``); before: :func:`range_valid`."""
    if range.notifier is not None:
        return not interval_check_retry(range.notifier, range.notifier_seq)
    return range_valid(range)


def range_register(range: HmmRange, mirror: HmmMirror) -> None:
    """``hmm_range_register``: start tracking ``range`` for ``mirror``.

    Raises :class:`InvalidArgumentError` (EINVAL) for an unaligned or empty
    range and :class:`BadAddressError` (EFAULT) when the mm is already dying
    (``mmget_not_zero`` failed). The range then pins ``mm_users`` until
    :func:`range_unregister`, so ``release`` cannot run meanwhile. It is valid
    at once unless an invalidation is in flight.
    """
    range.valid = False
    range.hmm = None
    hmm = mirror.hmm
    if hmm is None:
        raise MisuseError(f"hmm_range_register on {mirror!r}, which is not registered")
    if not hmm.range_api:
        raise MisuseError(f"hmm_range_register on {mirror!r}: 5.5 removed the range API (use an interval notifier "
                          f"and hmm_range_fault with range.notifier set)")
    mm = hmm.address_space
    if range.start % mm.page_size or range.end % mm.page_size:
        raise InvalidArgumentError(f"range {range.start:#x}-{range.end:#x} is not page aligned")
    if range.start >= range.end:
        raise InvalidArgumentError(f"range {range.start:#x}-{range.end:#x} is empty")
    if not mm.mmget_not_zero():
        raise BadAddressError(f"mm {mm.id} is exiting: hmm_range_register cannot pin it")
    hmm.pin_for_range()
    with hmm.ranges_lock:
        range.hmm = hmm
        range.mirror = mirror
        hmm.ranges.insert(0, range)
        range.valid = not hmm.notifiers


def range_unregister(range: HmmRange) -> None:
    """``hmm_range_unregister``: stop tracking; drop the ``mm_users`` pin (this may tear the mm down)."""
    hmm = _hmm(range)
    with hmm.ranges_lock:
        hmm.ranges.remove(range)
    range.valid = False
    range.hmm = None
    range.mirror = None
    hmm.address_space.mmput()
    hmm.unpin_for_range()


def range_valid(range: HmmRange) -> bool:
    """``hmm_range_valid``: no invalidation hit the range since it last became valid (see the module doc)."""
    hmm = _hmm(range)
    with hmm.ranges_lock:
        return range.valid


def range_wait_until_valid(range: HmmRange, timeout_ms: int) -> bool:
    """``hmm_range_wait_until_valid``: sleep until the range is valid; False after ``timeout_ms``."""
    hmm = _hmm(range)
    if range_valid(range):
        return True
    return hmm.wq.wait_event(lambda: range.valid, timeout_ms / 1000)


def range_fault(range: HmmRange) -> int:
    """``hmm_range_fault``: fill ``range.pfns`` from the CPU page table; the caller holds the mmap lock.

    Pages are faulted in (with a write fault for ``WRITE``) as
    ``range.default_flags`` ask. Like the kernel, the walk checks ``valid``
    before each VMA (each page of a hole) and after each fault, and returns
    the number of pages walked. Raises :class:`BusyError` (EBUSY) when the
    range is invalid there, :class:`BadAddressError` (EFAULT) for a fault
    in an unmapped hole or a failed fault, :class:`PermissionDeniedError`
    (EPERM) for an unreadable VMA (all entries cleared) or a write request on
    a read-only one; after an error the entries from the failing page on are
    ``None``.
    """
    mm = _mm(range)
    if not mm.mmap_lock.is_locked_by_current():
        raise MisuseError("hmm_range_fault needs the mmap lock held by the caller")
    shift, size = mm.page_shift, mm.page_size
    range.pfns = [None] * ((range.end - range.start) >> shift)
    fault = bool(range.default_flags & HmmPfnFlag.VALID)
    write = bool(range.default_flags & HmmPfnFlag.WRITE)
    addr = range.start
    while addr < range.end:
        if not _still_valid(range):
            raise BusyError(f"range {range.start:#x}-{range.end:#x} was invalidated")
        vma = mm.find_vma(addr)
        if vma is None:
            if fault:
                raise BadAddressError(f"hmm_range_fault: nothing mapped at {addr:#x}")
            addr += size  # a hole in a snapshot: HMM_PFN_NONE
            continue
        if not vma.readable:
            range.pfns = [None] * len(range.pfns)
            raise PermissionDeniedError(f"hmm_range_fault: VMA at {addr:#x} is not readable")
        vma_end = min(range.end, vma.end)
        while addr < vma_end:
            with mm.page_table_lock:
                pte = mm.page_table.lookup(addr >> shift)
                entry = HmmPfn(pte.pfn, pte.writable) if pte is not None else None
            if fault and (entry is None or (write and not entry.write)):
                _fault_page(range, vma.writable, addr, write)
                continue  # the kernel walks again from this page while the range stays valid
            range.pfns[(addr - range.start) >> shift] = entry
            addr += size
    return len(range.pfns)


def _fault_page(range: HmmRange, vma_writable: bool, addr: int, write: bool) -> None:
    """``hmm_vma_do_fault``: fault one page in; then the walk must find the range still valid."""
    mm = _mm(range)
    if write and not vma_writable:
        raise PermissionDeniedError(f"hmm_range_fault: write fault at {addr:#x} on a read-only VMA")
    mm.handle_mm_fault(addr, write)
    if not _still_valid(range):
        raise BusyError(f"range {range.start:#x}-{range.end:#x} was invalidated while faulting {addr:#x}")
