"""The invariants of the get/put scheme, checkable on any run: one module for the kit and the main job.

Models what the kernel's debugging aids would tell a driver author (KASAN
for a double free, lockdep and ``might_sleep()`` for a sleep in a
non-blockable range, kmemleak for a leak) plus the property mmu notifiers
exist for: a secondary MMU never keeps translating a page the CPU no longer
maps there. The numbered invariants of the reference's section 7 are cited
as "(inv. N)".

The package, by concern:

* :mod:`.violations`: the check names (:data:`CHECKS` says what each means),
  :class:`InvariantViolation` and :func:`format_violations`;
* :mod:`.recorder`: :class:`Recorder` is a non-driver plugin: its pluggy wrappers
  (``@hookimpl(wrapper=True)``, registered with
  ``kernel.drivers.add_plugin``) see every callback of every driver and keep,
  per subscription, its allocation, frees, releases, running callbacks and
  started ranges. What can be judged at once (a free overlapping a running
  callback, a callback after release, an end without its start, a sleep in a
  non-blockable range) is recorded as it happens; the rest is checked on
  request, when the run is quiescent (no invalidation in flight);
* the checks: :mod:`.registration` (inv. 1, 4), :mod:`.invalidation` (start/end
  pairing), :mod:`.teardown` (frees after the last put), :mod:`.coherence`
  (stale translations), :mod:`.leaks` (what outlives the last detach) and
  :mod:`.kernel_clean` (the kernel's own WARNs);
* :mod:`.interval`: invariants 17-23 of the 5.5 interval notifiers (their
  recorder and state checks, used by the kit's interval checks);
* :mod:`.monitor`: :class:`Monitor` adds what the recorder cannot see from the callbacks: the
  attaches the run holds (through the driver-neutral
  :mod:`mmu_notifier.exerciser` contract), the address spaces, and the
  device's translations. ``Monitor.check()`` returns every violation, with a
  message that says what was expected and what was found.

Every check returns a list of :class:`InvariantViolation`; an empty list means the
invariant holds. Nothing here raises for a broken invariant, and nothing here
takes a lock of the model or calls into a driver from inside a callback, so
a check never changes the schedule of the run it observes.
"""

from mmu_notifier.invariants.coherence import check_coherence, check_exit_coherence
from mmu_notifier.invariants.kernel_clean import check_kernel
from mmu_notifier.invariants.monitor import Monitor
from mmu_notifier.invariants.recorder import Recorder, SubscriptionRecord
from mmu_notifier.invariants.registration import check_registration
from mmu_notifier.invariants.violations import (
    ALLOC_FREE,
    CALLBACKS,
    CAPABILITIES,
    CHECKS,
    COHERENCE,
    EXIT_COHERENCE,
    KERNEL,
    LEAK,
    NONBLOCK,
    PAIRING,
    REGISTRATION,
    RELEASE,
    InvariantViolation,
    format_violations,
)

#: The old name of :class:`InvariantViolation`, kept importable for one release.
Violation = InvariantViolation

__all__ = [
    "ALLOC_FREE",
    "CALLBACKS",
    "CAPABILITIES",
    "CHECKS",
    "COHERENCE",
    "EXIT_COHERENCE",
    "KERNEL",
    "LEAK",
    "NONBLOCK",
    "PAIRING",
    "REGISTRATION",
    "RELEASE",
    "InvariantViolation",
    "Monitor",
    "Recorder",
    "SubscriptionRecord",
    "Violation",
    "check_coherence",
    "check_exit_coherence",
    "check_kernel",
    "check_registration",
    "format_violations",
]
