"""Coherence checks: the property mmu notifiers exist for.

A secondary MMU never keeps translating a page the CPU no longer maps there:
once an invalidation ended, and once the mm exited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from mmu_notifier.invariants.violations import COHERENCE, EXIT_COHERENCE, InvariantViolation

if TYPE_CHECKING:
    from mmu_notifier.mm import MM


def check_coherence(
    mm: MM, translations: Mapping[int, int], ended: Sequence[tuple[int, int, int, str]] = (), driver: str = "device"
) -> list[InvariantViolation]:
    """No device translation of ``mm`` names a frame the CPU page table does not map there.

    ``translations`` maps virtual page numbers to frames. Call when no
    invalidation is in flight: then every CPU change was announced and has
    ended, so any mismatch is a translation an invalidation should have
    dropped. ``ended`` (from :meth:`Recorder.take_ended`) names the
    invalidation responsible in the message.
    """
    found: list[InvariantViolation] = []
    entries = mm.page_table.entries
    shift = mm.page_shift
    for vpn, pfn in sorted(translations.items()):
        pte = entries.get(vpn)
        if pte is not None and pte.pfn == pfn:
            continue
        addr = vpn << shift
        cpu = f"maps frame {pte.pfn}" if pte is not None else "maps nothing"
        cause = [f"{event} {start:#x}-{end:#x}" for mm_id, start, end, event in ended
                 if mm_id == mm.id and start <= addr < end]
        after = f"after the invalidation(s) {', '.join(cause[-3:])} ended, " if cause else ""
        found.append(InvariantViolation(
            COHERENCE,
            f"{after}{driver} still translates {addr:#x} of mm {mm.id} to frame {pfn}, but the CPU page table "
            f"{cpu} there: a stale translation",
        ))
    return found


def check_exit_coherence(mm: MM, translations: Mapping[int, int], driver: str = "device") -> list[InvariantViolation]:
    """After ``mm`` exited, the device translates nothing of it."""
    if not translations:
        return []
    shown = ", ".join(f"{vpn << mm.page_shift:#x}->{pfn}" for vpn, pfn in sorted(translations.items())[:4])
    more = f" (+{len(translations) - 4} more)" if len(translations) > 4 else ""
    return [InvariantViolation(EXIT_COHERENCE, f"mm {mm.id} exited but {driver} still holds {len(translations)} "
                                               f"translation(s) of it: {shown}{more}")]
