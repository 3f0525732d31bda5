"""Fault injection for the late steps of process creation (the kernel's ``fail_nth`` / ``failslab`` idea).

The race of patch 09 needs a failure *after* the notifier was registered, and
the steps that can fail there are allocations: the process queue manager
(``pqm_init``), the per-GPU apertures (``kfd_init_apertures``) and the CWSR
trap handler mapping (``vm_mmap`` in ``kfd_process_init_cwsr_apu``). Each is
guarded by a :class:`FaultInjector` decision.

A step fails on its configured ``nth`` call and, independently, on any call
with its configured ``probability``, drawn from a per-step stream seeded with
its ``seed``, so a run is reproducible and the draws of one step do not
depend on how often the others were called.

Locking: every guarded step runs under ``kfd_processes_mutex``, which
serialises the counters and the draws; the injector takes no lock of its own.
"""

from __future__ import annotations

import random
from typing import Literal

from mmu_notifier.log import LOG
from mmu_notifier_amdkfd.config import FaultPoint, KfdFaults

#: The guarded steps, by the name of their config field.
Step = Literal["pqm_init", "init_apertures", "cwsr"]
STEPS: tuple[Step, ...] = ("pqm_init", "init_apertures", "cwsr")


class _Point:
    __slots__ = ("spec", "draw", "calls", "failed")

    def __init__(self, spec: FaultPoint | None) -> None:
        self.spec = spec
        self.draw = random.Random(spec.seed if spec is not None else 0).random
        self.calls = 0
        self.failed = 0


class FaultInjector:
    """Per-step call counters and seeded draws for one loaded amdkfd module."""

    def __init__(self, faults: KfdFaults) -> None:
        self._points = {step: _Point(getattr(faults, step)) for step in STEPS}

    def fail(self, step: Step) -> bool:
        """Count a call of ``step``; True when it must fail now. Caller holds ``kfd_processes_mutex``."""
        point = self._points[step]
        point.calls += 1
        spec = point.spec
        if spec is None:
            return False
        fail = point.calls == spec.nth
        if spec.probability and point.draw() < spec.probability:
            fail = True
        if fail:
            point.failed += 1
            if LOG.on:
                LOG.event("amdkfd.fault", step=step, call=point.calls)
        return fail

    def calls(self, step: Step) -> int:
        """How many times ``step`` was attempted."""
        return self._points[step].calls

    def failed(self, step: Step) -> int:
        """How many times ``step`` was made to fail."""
        return self._points[step].failed
