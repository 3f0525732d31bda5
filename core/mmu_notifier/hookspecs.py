"""The hooks a driver plugin implements: the model of ``struct mmu_notifier_ops``.

Every callback hook is called for **one driver only**: the one that owns the
subscription. The core resolves each driver's implementations once, when the
driver is added, and calls them directly; a non-driver plugin (a tracer, a
fault injector) may wrap any callback with a pluggy wrapper
(``@hookimpl(wrapper=True)``) and then sees the calls of every driver.

All callback hooks are optional except where a driver's ``required_hooks``
says otherwise (by default ``alloc_notifier`` and ``free_notifier``, which the
get/put scheme needs). A callback hook is declared ``firstresult``: the first
non-``None`` answer is the answer.

Context rules, as in the kernel:

* callbacks run inside an SRCU read section of the notifier domain, with no
  core lock held, and may sleep **unless** the range is non-blockable;
* ``free_notifier`` runs in atomic context (an SRCU callback) and must not sleep;
* a callback must not call ``unregister`` or ``synchronize`` (they would wait
  for the read section the callback runs in); ``put`` is allowed;
* ``invalidate`` (5.5 interval notifiers) runs outside any SRCU read section
  and must not call ``interval_notifier_remove`` or ``interval_read_begin``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from mmu_notifier.exerciser import Exerciser
    from mmu_notifier.explore import Scenario
    from mmu_notifier.interval import MMUIntervalNotifier
    from mmu_notifier.kernel import Kernel
    from mmu_notifier.mm import MM
    from mmu_notifier.notifier import MMUNotifier
    from mmu_notifier.pagetable import PTE
    from mmu_notifier.range import Range

PROJECT = "mmu_notifier"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def alloc_notifier(mm: MM) -> MMUNotifier:  # type: ignore[empty-body]
    """Allocate this driver's per-mm object for ``mm`` and return it.

    Called by ``get`` only when ``mm`` has no linked subscription of this
    driver. Return an instance of (a subclass of)
    :class:`mmu_notifier.MMUNotifier`; the core fills in ``ops``, ``mm`` and
    ``users``. Raise to fail the ``get`` (the kernel's ``ERR_PTR``): the
    exception propagates and nothing is registered.
    """


@hookspec(firstresult=True)
def free_notifier(subscription: MMUNotifier) -> None:
    """Free the object ``alloc_notifier`` returned.

    Called exactly once, after the last ``put`` and an SRCU grace period, when
    no callback on it runs or can start; or at once if registering a freshly
    allocated subscription failed. Runs in atomic context: **must not sleep**.
    After it returns the object is poisoned: touching it is a use after free.
    """


@hookspec(firstresult=True)
def release(subscription: MMUNotifier, mm: MM) -> None:
    """The address space is being torn down (exit_mmap), or ``unregister`` was called.

    The driver's last chance to stop every device access to ``mm``: tear down
    all secondary mappings and create no new ones. ``put`` never calls this; a
    driver using get/put must not rely on it. May run concurrently with
    ``unregister`` and, in a race, twice.
    """


@hookspec(firstresult=True)
def invalidate_range_start(subscription: MMUNotifier, range: Range) -> int:  # type: ignore[empty-body]
    """The CPU is about to change ``[range.start, range.end)``: stop using it.

    Pages in the range are still mapped. Until the matching end, the driver
    must not establish new secondary translations in the range. Return 0 (or
    ``None``). For a non-blockable range (``not range.blockable``), the driver
    must not sleep and returns ``-errno.EAGAIN`` whenever it would have had
    to; any other non-zero value, or any refusal of a blockable range, is a bug
    the core reports (the kernel WARNs).
    """


@hookspec(firstresult=True)
def invalidate_range_end(subscription: MMUNotifier, range: Range) -> None:
    """The CPU finished changing the range; pages may be unmapped and freed.

    Paired with ``invalidate_range_start``, except after a refused
    non-blockable start (then no subscription gets an end, as in 5.4).
    """


@hookspec(firstresult=True)
def invalidate_range(subscription: MMUNotifier, mm: MM, start: int, end: int) -> None:
    """Flush the secondary TLB for ``[start, end)`` (devices sharing CPU page tables).

    Called just before each ``invalidate_range_end`` and on its own where the
    CPU flushes its TLB under the page-table lock. Must not sleep.
    """


@hookspec(firstresult=True)
def clear_flush_young(subscription: MMUNotifier, mm: MM, start: int, end: int) -> int:  # type: ignore[empty-body]
    """Test and clear the accessed bit of secondary translations in the range, flushing; non-zero if young."""


@hookspec(firstresult=True)
def clear_young(subscription: MMUNotifier, mm: MM, start: int, end: int) -> int:  # type: ignore[empty-body]
    """Like ``clear_flush_young`` but the secondary TLB flush may be skipped."""


@hookspec(firstresult=True)
def test_young(subscription: MMUNotifier, mm: MM, address: int) -> int:  # type: ignore[empty-body]
    """Non-zero if the page at ``address`` was accessed through the device; clears nothing."""


@hookspec(firstresult=True)
def change_pte(subscription: MMUNotifier, mm: MM, address: int, pte: PTE) -> None:
    """The CPU entry at ``address`` is about to point to ``pte.pfn`` (KSM merge, COW).

    Called inside an invalidation of that page, before the CPU entry changes.
    """


@hookspec(firstresult=True)
def invalidate(subscription: MMUIntervalNotifier, range: Range, cur_seq: int) -> bool:  # type: ignore[empty-body]
    """(5.5 interval notifiers) ``range`` intersects ``subscription``'s interval: stop using it.

    The model of ``struct mmu_interval_notifier_ops``' only member. Called
    once per range for each subscription whose ``[start, last]`` intersects
    ``[range.start, range.end - 1]`` and that was in the mm's interval tree
    when the range began, before any list subscriber's ``invalidate_range_start``;
    at mm exit once more with a blockable ``Event.RELEASE`` range over the
    whole address space. Runs with no core lock held and outside any SRCU
    read section.

    On return the driver must no longer use any secondary translation in the
    range. A driver using ``interval_read_begin``/``interval_read_retry`` takes
    its own lock, calls ``interval_set_seq(subscription, cur_seq)`` (``cur_seq``
    is always odd), tears the range down and unlocks. It may sleep unless the
    range is non-blockable; then it returns ``False`` whenever it would have
    had to sleep (the core unwinds and the start fails with -EAGAIN). Return
    ``True`` (``None`` counts as ``True``) otherwise; ``False`` for a blockable
    range is a bug the core reports (the kernel WARNs). Must not call
    ``interval_notifier_remove`` or ``interval_read_begin``.
    """


#: The notifier callbacks, in the order of ``struct mmu_notifier_ops`` (then the interval notifiers' ``invalidate``).
CALLBACKS: tuple[str, ...] = (
    "release",
    "clear_flush_young",
    "clear_young",
    "test_young",
    "change_pte",
    "invalidate_range_start",
    "invalidate_range_end",
    "invalidate_range",
    "alloc_notifier",
    "free_notifier",
    "invalidate",
)


@hookspec(firstresult=True)
def exerciser(kernel: Kernel) -> Exerciser:  # type: ignore[empty-body]
    """Return this driver's :class:`mmu_notifier.exerciser.Exerciser` bound to ``kernel``.

    The driver-neutral contract through which the conformance kit and the main
    job drive the driver's own user-facing path (attach, map a range, device
    access, translations, detach). Resolved per driver like the callbacks.
    """


@hookspec
def explore_scenarios() -> list[Scenario]:  # type: ignore[empty-body]
    """Scenarios (``mmu_notifier.explore.Scenario``) this plugin adds to the explorer.

    Called over every plugin; the results are concatenated.
    """
