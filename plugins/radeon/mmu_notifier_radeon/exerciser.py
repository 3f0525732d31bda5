"""The conformance exerciser for ``radeon``: the user path of a GL/VA client using userptr BOs.

* attach: open the first radeon device and create one registered userptr BO
  (ANONONLY | REGISTER) over a page of private anonymous memory the client
  maps for it (a staging buffer); that registration is the ``get``;
* map_range: one more userptr BO over ``[start, end)`` with ANONONLY |
  REGISTER | VALIDATE (bound into the GTT now); each registered BO holds one
  user of the mm's ``radeon_mn``, which :meth:`RadeonExerciser.references`
  reports;
* access: a command submission by a thread of the process using the BO
  covering the address (re-validated, pages pinned with ``get_user_pages``
  if an invalidation moved it out), then the frame the GTT maps there;
* translations: the GTT entries of the mm's bound BOs on every device;
* detach: close the file: every BO is freed, each registered one
  unregistered (``put``);
* unload: ``radeon_exit``: close what is open, then (5.4, 5.5)
  ``mmu_notifier_synchronize``.

With ``scheme = "5.5"`` there is no per-mm notifier to take a reference on:
the exerciser declares ``interval`` and ``interval_only``, ``attach`` only
opens the device (the handle holds no list subscription), each
``map_range`` BO inserts its own interval notifier and ``detach`` (closing
the file) removes them.

``known_kernel_failures`` names the conformance checks the modelled kernel
itself fails, with the kernel's reason; the kit expects them to fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmu_notifier import MM, invariants
from mmu_notifier import exerciser as contract
from mmu_notifier.errors import BadAddressError, NoSuchProcessError
from mmu_notifier.exerciser import Handle
from mmu_notifier_radeon.device import ANONONLY, REGISTER, VALIDATE, Radeon, RadeonFile

CAPABILITIES = frozenset({
    contract.RELEASE,
    contract.REFUSES_NONBLOCK,
    contract.TRACKS_RANGES,
    contract.DEVICE_TRANSLATIONS,
})

#: 5.5: interval notifiers only (no release callback, no list subscription; a refusal is an interval ``False``)
CAPABILITIES_55 = frozenset({
    contract.REFUSES_NONBLOCK,
    contract.TRACKS_RANGES,
    contract.DEVICE_TRANSLATIONS,
    contract.INTERVAL,
    contract.INTERVAL_ONLY,
})

#: the flags of the BOs the exerciser makes: writable userptrs need ANONONLY and REGISTER
USERPTR = ANONONLY | REGISTER

#: Why 5.4 fails a check, by conformance test name (the kernel's behaviour, not a model bug).
RELEASE_FLAGS_0 = (
    "5.4 radeon_mn_release passes a full-range invalidation with flags 0, which is not blockable, so it trylocks "
    "and returns -EAGAIN at the first node: with BOs registered (exit_mm runs before the files close) it unbinds "
    "nothing and the GTT keeps pages of the exited mm (fixed in 5.5, where release is blockable)"
)
CS_RACE = (
    "radeon has no invalidate_range_end and no sequence count, yet command submission pins pages with "
    "get_user_pages under the mmap read lock: between an invalidation's start (which evicted the BO) and the page "
    "table change (MADV_DONTNEED, migration) a submission binds the old pages again. 5.5's conversion says it "
    "'cannot be correct against all races' and leaves a FIXME"
)


@dataclass(eq=False)
class RadeonAttach:
    """One attach: the open DRM file and its GEM handles with their user ranges."""

    file: RadeonFile
    #: the staging page of the attach's own BO (None in 5.5, whose attach registers nothing)
    staging: int | None
    bos: list[tuple[int, int, int]] = field(default_factory=list)


class RadeonExerciser:
    """Drives one loaded radeon module through :class:`mmu_notifier.exerciser.Exerciser`."""

    driver = "radeon"

    def __init__(self, module: Radeon) -> None:
        self.module = module
        self.kernel = module.kernel
        config = module.config
        self.capabilities = CAPABILITIES_55 if config.scheme == "5.5" else CAPABILITIES
        failures: dict[str, str] = {}
        if config.scheme == "5.5":
            failures["test_race_invalidation_vs_access"] = CS_RACE
        if config.scheme == "5.4":
            if not config.release_blockable:
                for check in ("test_exit_coherence", "test_release_once_on_exit", "test_detach_after_exit_frees_once"):
                    failures[check] = RELEASE_FLAGS_0
                failures["test_state_machine"] = RELEASE_FLAGS_0
            failures["test_race_invalidation_vs_access"] = CS_RACE
        #: conformance test name -> the kernel's reason for failing it
        self.known_kernel_failures = failures
        violations: dict[str, str] = {}
        if config.scheme in ("5.4", "5.5"):
            violations[invariants.COHERENCE] = CS_RACE
        if config.scheme == "5.4" and not config.release_blockable:
            violations[invariants.EXIT_COHERENCE] = RELEASE_FLAGS_0
        #: invariant check name -> the kernel's reason: what ``mmu-notifier run`` reports as known kernel behaviour
        self.known_kernel_violations = violations

    def attach(self, mm: MM) -> Handle:
        """Open the device, map a staging page and register a userptr BO on it (``get``)."""
        rdev = self.module.devices[0]
        file = rdev.open(mm)
        if self.module.config.scheme == "5.5":  # nothing per mm to register: the BOs bring their own notifiers
            return Handle(mm, None, RadeonAttach(file, None))
        staging = mm.mmap(mm.page_size)
        handle = rdev.gem_userptr(file, staging, mm.page_size, USERPTR)
        bo = file.handles[handle]
        assert bo.mn is not None
        state = RadeonAttach(file, staging, [(staging, staging + mm.page_size, handle)])
        return Handle(mm, bo.mn, state)

    def map_range(self, handle: Handle, start: int, end: int) -> None:
        """A userptr BO over ``[start, end)``, registered and bound now (may raise a KernelError)."""
        state: RadeonAttach = handle.state
        rdev = state.file.rdev
        gem = rdev.gem_userptr(state.file, start, end - start, USERPTR | VALIDATE)
        state.bos.append((start, end, gem))
        handle.ranges.append((start, end))

    def access(self, handle: Handle, address: int, write: bool = False) -> int | None:
        """A command submission using the newest BO covering ``address``; the frame the GPU reads there."""
        state: RadeonAttach = handle.state
        mm = handle.mm
        covering = [gem for start, end, gem in state.bos if start <= address < end and gem in state.file.handles]
        if not covering:
            raise BadAddressError(f"radeon: no userptr BO of this file covers {address:#x}")
        if not mm.mmget_not_zero():
            raise NoSuchProcessError(f"radeon: mm {mm.id} exited; no thread of it can submit")
        try:
            gem = covering[-1]
            state.file.rdev.cs(state.file, [(gem, write)])
            return state.file.handles[gem].frame_at(address)
        finally:
            mm.mmput()

    def translations(self, mm: MM) -> dict[int, int]:
        """Every GTT translation of ``mm`` on every device."""
        return self.module.translations(mm)

    def references(self, handle: Handle) -> int:
        """The users of the ``radeon_mn`` this attach holds: one per registered BO of its file."""
        state: RadeonAttach = handle.state
        return sum(1 for bo in state.file.handles.values() if bo.mn is not None)

    def detach(self, handle: Handle) -> None:
        """Close the DRM file: every BO freed, each registered one ``put``."""
        state: RadeonAttach = handle.state
        state.file.rdev.close(state.file)

    def unload(self) -> None:
        """Module exit: close what is open, then ``mmu_notifier_synchronize`` (5.4)."""
        self.module.radeon_exit()
