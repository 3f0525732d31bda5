"""The monitor: every invariant of one kernel's run, driven through exercisers.

Adds what the recorder cannot see from the callbacks: the attaches the run
holds (through the driver-neutral :mod:`mmu_notifier.exerciser` contract), the
address spaces and their reference counts, and the device's translations.
``Monitor.check()`` runs the checks of every concern module at a quiescent
point and returns every violation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from mmu_notifier import exerciser as contract
from mmu_notifier.invariants.coherence import check_coherence, check_exit_coherence
from mmu_notifier.invariants.kernel_clean import check_kernel
from mmu_notifier.invariants.leaks import TrackedMM, check_detached_translations, check_refcounts
from mmu_notifier.invariants.recorder import Recorder
from mmu_notifier.invariants.registration import check_registration
from mmu_notifier.invariants.violations import CAPABILITIES, InvariantViolation

if TYPE_CHECKING:
    from mmu_notifier.exerciser import Exerciser, Handle
    from mmu_notifier.kernel import Kernel
    from mmu_notifier.mm import MM



def _references(ex: Exerciser, handle: Handle) -> int:
    """The users ``handle`` holds: ``ex.references(handle)`` if the exerciser has it, else 1."""
    references = getattr(ex, "references", None)
    return 1 if references is None else int(references(handle))

class Monitor:
    """Every invariant of one kernel's run, driven through exercisers.

    Tell it about each address space before attaching to it
    (:meth:`track_mm`, which also remembers its reference counts) and about
    each attach and detach; then :meth:`check` returns every violation.
    """

    def __init__(self, kernel: Kernel, exercisers: Iterable[Exerciser] = ()) -> None:
        self.kernel = kernel
        self.recorder = Recorder().install(kernel)
        self.exercisers: dict[str, Exerciser] = {}
        #: attached handles per driver, by identity in attach order (a detach is O(1) at any scale)
        self.handles: dict[str, dict[int, Handle]] = {}
        self.mms: list[TrackedMM] = []
        self._tracked: set[int] = set()
        for ex in exercisers:
            self.watch(ex)

    def watch(self, ex: Exerciser) -> None:
        """Check the driver behind ``ex``."""
        self.exercisers[ex.driver] = ex
        self.handles.setdefault(ex.driver, {})

    def track_mm(self, mm: MM) -> MM:
        """Watch ``mm`` (before anything attaches to it); returns it."""
        if id(mm) not in self._tracked:  # tracked mms stay referenced, so their ids stay unique
            self._tracked.add(id(mm))
            self.mms.append(TrackedMM(mm, mm.mm_users.value, mm.mm_count.value))
        return mm

    def attached(self, driver: str, handle: Handle) -> Handle:
        """Record an attach; returns the handle."""
        self.track_mm(handle.mm)
        self.handles.setdefault(driver, {})[id(handle)] = handle
        return handle

    def detached(self, driver: str, handle: Handle) -> None:
        """Record a detach."""
        del self.handles[driver][id(handle)]

    def held(self, driver: str, mm: MM | None = None) -> list[Handle]:
        """Handles of ``driver`` still attached (on ``mm``)."""
        return [h for h in self.handles.get(driver, {}).values() if mm is None or h.mm is mm]

    # -- the checks ----------------------------------------------------------------
    def check(self, settled: bool = False) -> list[InvariantViolation]:
        """Every invariant that holds at a quiescent point; ``settled``: synchronize just ran."""
        found = list(self.recorder.violations)
        found += check_kernel(self.kernel)
        found += self.recorder.check_pairing()
        found += self.recorder.check_frees(settled)
        ended = self.recorder.take_ended()
        for driver, ex in self.exercisers.items():
            found += self._check_driver(driver, ex, ended, settled)
        if settled:
            held = [h.subscription for hs in self.handles.values() for h in hs.values() if h.subscription is not None]
            for tracked in self.mms:  # a reference dropped only by exit is held by the live mm
                container = tracked.mm.mmu_notifier_mm
                if tracked.mm.alive and container is not None:
                    held += [s for s in container.subscriptions if s.ops.name in self._by_exit()]
            found += self.recorder.check_leaks(held)
            attached_mms = {id(h.mm) for hs in self.handles.values() for h in hs.values()}
            found += check_refcounts(self.mms, lambda mm: id(mm) in attached_mms)
        return found

    def _check_driver(
        self, driver: str, ex: Exerciser, ended: list[tuple[int, int, int, str]], settled: bool
    ) -> list[InvariantViolation]:
        found: list[InvariantViolation] = []
        caps = ex.capabilities
        ops = self.kernel.drivers.ops_of(driver)
        by_exit = contract.DETACH_BY_EXIT in caps
        if contract.REFUSES_NONBLOCK not in caps:
            for name, range in self.recorder.refusals:
                if name == driver:
                    found.append(InvariantViolation(
                        CAPABILITIES,
                        f"driver {driver} refused the non-blockable {range!r} but does not declare the capability "
                        f"refuses_nonblock",
                    ))
        by_mm: dict[int, list[Handle]] = {}
        for handle in self.handles.get(driver, {}).values():
            by_mm.setdefault(id(handle.mm), []).append(handle)
        for tracked in self.mms:
            mm = tracked.mm
            held = by_mm.get(id(mm), [])
            subs = [sub for h in held if h.subscription is not None for sub in [h.subscription] * _references(ex, h)]
            found += check_registration(mm, ops, subs, by_exit=by_exit)
            if contract.DEVICE_TRANSLATIONS not in caps:
                continue
            translations = ex.translations(mm)
            if mm.alive:
                found += check_coherence(mm, translations, ended, driver)
                if not held and not by_exit:
                    found += check_detached_translations(mm, translations, driver)
            elif contract.RELEASE in caps or not held:
                found += check_exit_coherence(mm, translations, driver)
        return found

    def _by_exit(self) -> set[str]:
        return {d for d, ex in self.exercisers.items() if contract.DETACH_BY_EXIT in ex.capabilities}
