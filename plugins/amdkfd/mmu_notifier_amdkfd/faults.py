"""Fault injection for the late steps of process creation, on the core's injector (:mod:`mmu_notifier.faults`).

The race of patch 09 needs a failure *after* the notifier was registered, and
the steps that can fail there are allocations: the process queue manager
(``pqm_init``), the per-GPU apertures (``kfd_init_apertures``) and the CWSR
trap handler mapping (``vm_mmap`` in ``kfd_process_init_cwsr_apu``). Each is a
named fault site of the core injector, ``"amdkfd.<step>"``, armed from the
driver's config.

A step fails on its configured ``nth`` call and, independently, on any call
with its configured ``probability``, drawn from a per-step stream seeded with
its ``seed``, so a run is reproducible and the draws of one step do not
depend on how often the others were called.

Locking: every guarded step runs under ``kfd_processes_mutex``; the core
injector guards its counters itself.
"""

from __future__ import annotations

from typing import Literal

from mmu_notifier.faults import FaultInjector as CoreFaultInjector
from mmu_notifier_amdkfd.config import KfdFaults

#: The guarded steps, by the name of their config field.
Step = Literal["pqm_init", "init_apertures", "cwsr"]
STEPS: tuple[Step, ...] = ("pqm_init", "init_apertures", "cwsr")


def site(step: Step) -> str:
    """The core fault site of ``step``."""
    return f"amdkfd.{step}"


class FaultInjector:
    """The driver's fault plan armed on a core injector (the kernel's ``kernel.faults``, or a private one)."""

    def __init__(self, faults: KfdFaults, core: CoreFaultInjector | None = None) -> None:
        self.core = core if core is not None else CoreFaultInjector("amdkfd")
        for step in STEPS:
            spec = getattr(faults, step)
            if spec is not None and (spec.nth is not None or spec.probability):
                self.core.inject(site(step), nth=spec.nth, probability=spec.probability or None, seed=spec.seed)

    def fail(self, step: Step) -> bool:
        """Count a call of ``step``; True when it must fail now. Caller holds ``kfd_processes_mutex``."""
        return self.core.should_fail(site(step))

    def calls(self, step: Step) -> int:
        """How many times ``step`` was attempted."""
        return self.core.calls(site(step))

    def failed(self, step: Step) -> int:
        """How many times ``step`` was made to fail."""
        return len(self.core.failures(site(step)))
