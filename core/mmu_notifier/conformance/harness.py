"""The kit's harness: load a driver the way the kernel loads a module, and give each check a fresh world.

* :class:`DriverUnderTest` loads one entry point of ``mmu_notifier.drivers``
  through the core's own loader (so a broken plugin fails exactly as it would
  for ``mmu-notifier run``) and checks its exerciser;
* :class:`World` is one check's machine: a fresh :class:`~mmu_notifier.Kernel`
  with only that driver loaded, the :class:`~mmu_notifier.invariants.Monitor`
  watching it, and helpers that go through the exerciser;
* the concurrency checks run on these worlds but live in
  :mod:`mmu_notifier.conformance.races`.

Nothing here imports pytest, so the main job and scripts can use it too.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmu_notifier import exerciser as contract
from mmu_notifier import invariants, synchronize
from mmu_notifier.config import DriverConfig, validate
from mmu_notifier.errors import ConfigError, KernelError, PluginError
from mmu_notifier.exerciser import Exerciser, Handle
from mmu_notifier.invariants import InvariantViolation, Monitor
from mmu_notifier.kernel import Kernel
from mmu_notifier.mm import MM
from mmu_notifier.notifier import MMUNotifier
from mmu_notifier.plugins import MMUNotifierOps, available_drivers

__all__ = [
    "FRAMES",
    "ContractError",
    "DriverUnderTest",
    "InvariantError",
    "LoadFailure",
    "World",
    "known_kernel_failures",
    "make_exerciser",
]

#: physical frames of a world's kernel (small: frames are reused at once, which exposes stale translations)
FRAMES = 4096
#: the methods of the exerciser contract
CONTRACT_METHODS = ("attach", "map_range", "access", "translations", "detach", "unload")


class LoadFailure(Exception):
    """The driver could not be loaded (not installed, import error, bad hooks, invalid config, bad exerciser)."""


class ContractError(LoadFailure):
    """The driver's exerciser does not follow :mod:`mmu_notifier.exerciser`."""


class InvariantError(AssertionError):
    """One or more invariants were violated; the message lists them."""

    def __init__(self, violations: list[InvariantViolation], context: str = "") -> None:
        self.violations = violations
        head = f"{context}: " if context else ""
        super().__init__(f"{head}{len(violations)} violation(s)\n{invariants.format_violations(violations)}")


def make_exerciser(ops: MMUNotifierOps, kernel: Kernel, name: str) -> Exerciser:
    """Call the driver's ``exerciser`` hook and check the object it returns against the contract."""
    if ops.exerciser is None:
        raise ContractError(
            f"driver {name!r} implements no 'exerciser' hook, so the kit cannot drive it "
            f"(see mmu_notifier.exerciser and the plugin guide)"
        )
    try:
        ex = ops.exerciser(kernel)
    except Exception as error:
        raise ContractError(f"driver {name!r}: the exerciser hook raised {type(error).__name__}: {error}") from error
    if ex is None:
        raise ContractError(f"driver {name!r}: the exerciser hook returned None")
    missing = [m for m in CONTRACT_METHODS if not callable(getattr(ex, m, None))]
    if missing:
        raise ContractError(f"driver {name!r}: its exerciser {type(ex).__name__} lacks {', '.join(missing)}")
    declared = getattr(ex, "driver", None)
    if declared != name:
        raise ContractError(
            f"driver {name!r}: its exerciser says driver = {declared!r}; it must be the entry-point name"
        )
    caps = getattr(ex, "capabilities", None)
    if not isinstance(caps, (set, frozenset)):
        raise ContractError(f"driver {name!r}: exerciser.capabilities must be a frozenset, not {caps!r}")
    unknown = sorted(set(caps) - contract.CAPABILITIES)
    if unknown:
        raise ContractError(
            f"driver {name!r}: unknown capabilities {unknown}; known: {sorted(contract.CAPABILITIES)}"
        )
    return ex  # type: ignore[no-any-return]


def known_kernel_failures(ex: Exerciser, name: str) -> dict[str, str]:
    """The exerciser's optional ``known_kernel_failures``: test name -> the kernel's reason; checked for shape."""
    known = getattr(ex, "known_kernel_failures", None) or {}
    well_formed = isinstance(known, dict) and all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in known.items()
    )
    if not well_formed:
        raise ContractError(f"driver {name!r}: exerciser.known_kernel_failures must be a dict of test name -> "
                            f"non-empty reason, not {known!r}")
    return dict(known)


@dataclass
class DriverUnderTest:
    """One installed driver, loaded once; :meth:`world` builds a fresh machine with it."""

    name: str
    entry_point: importlib.metadata.EntryPoint
    factory: Callable[[DriverConfig], object]
    config: DriverConfig
    capabilities: frozenset[str]
    #: the driver object of the load check (its class attributes are what the kit compares)
    driver: object = None
    ops: MMUNotifierOps | None = None
    #: conformance test name -> why the modelled kernel itself fails it (the exerciser's ``known_kernel_failures``)
    known_kernel_failures: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, name: str, configs: dict[str, dict[str, Any]] | None = None) -> DriverUnderTest:
        """Load ``name`` from the entry points; raises :class:`LoadFailure` saying why it cannot be."""
        entry_points = {ep.name: ep for ep in available_drivers()}
        if name not in entry_points:
            installed = ", ".join(sorted(entry_points)) or "none"
            raise LoadFailure(f"no driver named {name!r} is installed in the entry-point group "
                              f"'mmu_notifier.drivers' (installed: {installed})")
        kernel = Kernel(frames=FRAMES)
        report = kernel.drivers.load_entry_points(configs or {}, only=[name])
        if name in report.failed:
            raise LoadFailure(str(report.failed[name]))
        ops = report.loaded[name]
        ex = make_exerciser(ops, kernel, name)
        driver = ops.driver
        config = getattr(driver, "config", None)
        if not isinstance(config, DriverConfig):
            model = getattr(type(driver), "config_model", DriverConfig)
            config = validate(name, model, (configs or {}).get(name, {}))
        factory = entry_points[name].load()
        known = known_kernel_failures(ex, name)
        dut = cls(name, entry_points[name], factory, config, frozenset(ex.capabilities), driver, ops, known)
        try:
            ex.unload()
        except Exception as error:
            raise ContractError(f"driver {name!r}: exerciser.unload() on a fresh driver raised "
                                f"{type(error).__name__}: {error}") from error
        return dut

    def has(self, capability: str) -> bool:
        """The exerciser declares ``capability``."""
        return capability in self.capabilities

    def world(self, frames: int = FRAMES) -> World:
        """A fresh kernel with only this driver, watched by a monitor."""
        return World(self, frames)


class World:
    """One check's machine: a kernel, the driver under test, its exerciser and a monitor."""

    def __init__(self, dut: DriverUnderTest, frames: int = FRAMES) -> None:
        self.dut = dut
        self.name = dut.name
        self.kernel = Kernel(frames=frames)
        try:
            driver = dut.factory(dut.config)
        except Exception as error:
            raise PluginError(dut.name, f"construction failed: {type(error).__name__}: {error}") from error
        self.ops = self.kernel.drivers.add(driver, dut.name)
        self.driver = driver
        self.exerciser = make_exerciser(self.ops, self.kernel, dut.name)
        self.caps = frozenset(self.exerciser.capabilities)
        self.monitor = Monitor(self.kernel, [self.exerciser])
        self.page = self.kernel.page_size
        self.mms: list[MM] = []
        #: violations the harness itself saw (an access returning a frame the CPU does not map)
        self.extra: list[InvariantViolation] = []

    # -- address spaces -------------------------------------------------------------
    def new_mm(self) -> MM:
        """A fresh process address space, watched by the monitor."""
        mm = MM(self.kernel)
        self.mms.append(mm)
        self.monitor.track_mm(mm)
        return mm

    def region(
        self, mm: MM, pages: int = 4, *, shared: bool = False, handle: Handle | None = None
    ) -> tuple[int, int]:
        """mmap ``pages`` pages; with ``handle``, also make the device interested in them. Returns ``(start, end)``."""
        start = mm.mmap(pages * self.page, shared=shared)
        end = start + pages * self.page
        if handle is not None:
            self.exerciser.map_range(handle, start, end)
        return start, end

    # -- attaches ---------------------------------------------------------------------
    def attach(self, mm: MM) -> Handle:
        """Attach through the exerciser and check the handle it returns."""
        handle = self.exerciser.attach(mm)
        if not isinstance(handle, Handle):
            raise ContractError(
                f"driver {self.name!r}: attach returned {handle!r}, not a mmu_notifier.exerciser.Handle"
            )
        if handle.mm is not mm or not isinstance(handle.subscription, MMUNotifier):
            raise ContractError(f"driver {self.name!r}: attach returned a handle for mm {handle.mm!r} holding "
                                f"{handle.subscription!r}; it must name the attached mm and the driver's subscription")
        return self.monitor.attached(self.name, handle)

    def detach(self, handle: Handle) -> None:
        """Detach through the exerciser."""
        self.monitor.detached(self.name, handle)
        self.exerciser.detach(handle)

    def held(self, mm: MM | None = None) -> list[Handle]:
        """Handles still attached (on ``mm``)."""
        return self.monitor.held(self.name, mm)

    # -- device side ------------------------------------------------------------------
    def access(
        self, handle: Handle, address: int, write: bool = False, tries: int = 3, verify: bool = True
    ) -> int | None:
        """A device access, retried up to ``tries`` times while the driver says "retry".

        A :class:`~mmu_notifier.errors.KernelError` counts as no translation.
        With ``verify`` (single-threaded use only), a returned frame must be
        the one the CPU page table maps at ``address`` right now.
        """
        for _ in range(tries):
            try:
                pfn = self.exerciser.access(handle, address, write)
            except KernelError:
                return None
            if pfn is None:
                continue
            if verify:
                mm = handle.mm
                pte = mm.page_table.entries.get(address >> mm.page_shift)
                if pte is None or pte.pfn != pfn:
                    cpu = f"frame {pte.pfn}" if pte is not None else "nothing"
                    self.extra.append(InvariantViolation(
                        invariants.COHERENCE,
                        f"a device access at {address:#x} of mm {mm.id} returned frame {pfn}, but the CPU maps {cpu} "
                        f"there",
                    ))
            return int(pfn)
        return None

    def touch(self, handle: Handle, start: int, end: int, write: bool = False) -> dict[int, int | None]:
        """A device access to every page of ``[start, end)``; address -> frame (or None)."""
        return {addr: self.access(handle, addr, write) for addr in range(start, end, self.page)}

    def translations(self, mm: MM) -> dict[int, int]:
        """The device's translations of ``mm`` (empty without the device_translations capability)."""
        if contract.DEVICE_TRANSLATIONS not in self.caps:
            return {}
        return dict(self.exerciser.translations(mm))

    # -- checking ---------------------------------------------------------------------
    def violations(self, settled: bool = False) -> list[InvariantViolation]:
        """Every violation now (``settled``: synchronize just ran and nothing is in flight)."""
        found = self.extra + self.monitor.check(settled)
        self.extra = []
        return found

    def check(self, context: str = "", settled: bool = False, only: Iterable[str] | None = None) -> None:
        """Raise :class:`InvariantError` listing every violation (of the checks in ``only``, if given)."""
        found = self.violations(settled)
        if only is not None:
            wanted = set(only)
            found = [v for v in found if v.check in wanted]
        if found:
            raise InvariantError(found, context)

    def settle(self, context: str = "") -> None:
        """``synchronize``, then check everything including leaks."""
        synchronize(self.kernel)
        self.check(context or "after synchronize", settled=True)

    def close(self) -> None:
        """Detach what is still attached, unload the driver and wait for every free."""
        for handle in list(self.held()):
            self.detach(handle)
        self.exerciser.unload()
        synchronize(self.kernel)


def kit_dir() -> Path:
    """Where the kit's check modules live."""
    return Path(__file__).parent


def config_errors(name: str, model: type[DriverConfig], raw: dict[str, Any]) -> ConfigError | None:
    """The :class:`ConfigError` validating ``raw`` raises, or None if it is valid."""
    try:
        validate(name, model, raw)
    except ConfigError as error:
        return error
    return None
