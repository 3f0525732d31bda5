"""The driver-neutral exerciser contract: how the kit and the main job drive any driver.

A driver plugin implements the ``exerciser(kernel)`` hook and returns an
object satisfying :class:`Exerciser`. Through it, code that knows nothing of
the driver walks the driver's own user-facing path: open the device and take
the per-mm reference (which must end in ``get``, or ``register`` for a
driver that declares :data:`DETACH_BY_EXIT`), make the device interested in a
range, let the device access a page (filling its translation from the CPU
page table), read back what the device currently translates, and drop the
reference (which must end in ``put``).

Capabilities say what the kit may expect; it skips only what a missing
capability rules out, and says so.

Rules every exerciser keeps (the conformance kit relies on them):

* it uses only the driver's own code and the primitives of
  :mod:`mmu_notifier.sync` (no real threads, no clock, no unseeded
  randomness), so the explorer can replay any interleaving of its calls;
* ``capabilities`` equals the driver class's ``capabilities``, and
  ``driver`` is the entry-point name;
* ``attach`` is called only while the caller holds an ``mm_users``
  reference on ``mm`` (the mm is alive) and holds no mmap lock;
* ``detach`` must also work after the mm exited (detach after exit), and
  a :data:`DETACH_BY_EXIT` driver's ``detach`` changes nothing;
* ``map_range`` appends ``(start, end)`` to ``handle.ranges``;
* ``access`` may raise a :class:`~mmu_notifier.errors.KernelError` (EFAULT
  for an address the CPU cannot fault in, an exited mm, no range covering
  it ...): callers treat that as "no translation"; a frame it returns is
  the one the CPU page table maps at ``address`` at the time of the access;
* ``translations`` is called only from outside driver callbacks, at points
  where the caller knows no invalidation is in flight; it returns a fresh
  dict and must not change any state;
* the driver drops every device translation of an attach before the
  ``put`` of its ``detach`` (release is not guaranteed under get/put).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from mmu_notifier.mm import MM
    from mmu_notifier.notifier import MMUNotifier

#: The driver has a ``release`` callback (it acts on mm teardown).
RELEASE = "release"
#: The driver may refuse a non-blockable range with -EAGAIN.
REFUSES_NONBLOCK = "refuses_nonblock"
#: ``map_range`` limits what ``access`` may translate (accesses elsewhere fail).
TRACKS_RANGES = "tracks_ranges"
#: ``access`` fills a device translation that ``translations`` reports.
DEVICE_TRANSLATIONS = "device_translations"
#: The reference is dropped by mm teardown (``put`` from ``release``), not by ``detach``.
DETACH_BY_EXIT = "detach_by_exit"

#: (5.5) ``map_range`` inserts interval notifiers (``MMUIntervalNotifier``) covering the range on the
#: handle's mm, and ``detach`` removes them (``interval_notifier_remove``) before its put; ``map_range``
#: never waits for an invalidation (it inserts, it does not fault)
INTERVAL = "interval"

CAPABILITIES = frozenset({RELEASE, REFUSES_NONBLOCK, TRACKS_RANGES, DEVICE_TRANSLATIONS, DETACH_BY_EXIT, INTERVAL})


@dataclass(eq=False)
class Handle:
    """One attach: the user-side object (an open file, a mirror, a thread state ...).

    ``subscription`` is the driver's subscription on ``mm`` that this attach
    holds a reference on; ``state`` is whatever the driver needs.
    """

    mm: MM
    subscription: MMUNotifier
    state: Any = None
    ranges: list[tuple[int, int]] = field(default_factory=list)


@runtime_checkable
class Exerciser(Protocol):
    """What a driver offers the kit. Every method may use the primitives of :mod:`mmu_notifier.sync`."""

    #: the driver's name (the entry-point name)
    driver: str
    #: a subset of :data:`CAPABILITIES`
    capabilities: frozenset[str]

    def attach(self, mm: MM) -> Handle:
        """Open the device for ``mm`` and take the driver's reference (ends in ``get``)."""
        ...

    def map_range(self, handle: Handle, start: int, end: int) -> None:
        """Make the device interested in ``[start, end)`` (mirror, register an MR, a userptr, a GSEG ...)."""
        ...

    def access(self, handle: Handle, address: int, write: bool = False) -> int | None:
        """A device access at ``address``: returns the frame now translated, or None if the device
        must retry later (an invalidation is in flight, or the driver refused). May raise a
        :class:`~mmu_notifier.errors.KernelError` where the access cannot be served at all."""
        ...

    def translations(self, mm: MM) -> dict[int, int]:
        """Every device translation of ``mm`` now held: virtual page number -> frame (a fresh dict; no side effects)."""
        ...

    def detach(self, handle: Handle) -> None:
        """Drop the reference ``attach`` took (ends in ``put``); a no-op with :data:`DETACH_BY_EXIT`.

        Works after the mm exited too."""
        ...

    def unload(self) -> None:
        """Module unload: drop every remaining device state and call ``synchronize``."""
        ...
