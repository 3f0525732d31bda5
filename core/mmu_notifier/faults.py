"""Fault injection at named sites: the model of the kernel's ``fail_nth`` and ``failslab``.

Each :class:`~mmu_notifier.kernel.Kernel` has one :class:`FaultInjector` (``kernel.faults``). Code
that can fail in the kernel asks ``kernel.faults.should_fail(site)`` at the point where it would
fail; a test or a scenario arms a site with :meth:`FaultInjector.inject`:

* ``inject(site, nth=N)`` fails the Nth call counted from the injection (``fail_nth``), and the
  ``times - 1`` calls after it (``times`` defaults to 1);
* ``inject(site, probability=p, seed=s)`` fails each call with probability ``p`` drawn from a
  stream seeded with ``s`` for that site alone (``failslab``'s probability, made reproducible:
  the draws of one site do not depend on how often other sites were asked);
* both together: a call fails when either says so (a draw is taken on every call).

Site names are ``"<owner>.<what>"``. The core's sites:

``mmu_notifier.register.alloc``
    the ``kmalloc`` of the per-mm container in ``__mmu_notifier_register`` (only when the mm has
    none yet): the registration fails with ENOMEM (:class:`~mmu_notifier.errors.NoMemoryError`).
``mmu_notifier.register.mmap_lock``
    ``mm_take_all_locks`` in ``__mmu_notifier_register`` finding a fatal signal pending: the
    registration fails with EINTR (:class:`~mmu_notifier.errors.InterruptedCallError`) and the
    container just allocated is dropped.

Plugins name their own sites ``"<driver>.<what>"``. An unarmed site costs a dict lookup.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from mmu_notifier import sync
from mmu_notifier.errors import InvalidArgumentError
from mmu_notifier.log import LOG

__all__ = ["CORE_SITES", "FaultInjector", "FaultRule", "REGISTER_ALLOC", "REGISTER_MMAP_LOCK"]

REGISTER_ALLOC = "mmu_notifier.register.alloc"
REGISTER_MMAP_LOCK = "mmu_notifier.register.mmap_lock"
CORE_SITES = (REGISTER_ALLOC, REGISTER_MMAP_LOCK)


@dataclass
class FaultRule:
    """How one armed site fails: on calls ``nth`` .. ``nth + times - 1`` and/or with ``probability``."""

    site: str
    nth: int | None
    probability: float
    times: int
    draw: Callable[[], float]
    base: int  # calls of the site before it was armed
    failed: int = 0


class _Counts:
    """Calls and failures of one site (a plain class: every kernel makes one per site it asks)."""

    __slots__ = ("calls", "failed", "history")

    def __init__(self) -> None:
        self.calls = 0
        self.failed = 0
        self.history: list[int] = []  # call numbers that failed


class FaultInjector:
    """Armed sites, call counters and failures of one kernel."""

    def __init__(self, name: str = "faults") -> None:
        self.name = name
        self._rules: dict[str, FaultRule] = {}
        self._counts: dict[str, _Counts] = {}

    def __repr__(self) -> str:
        return f"<FaultInjector {self.name} armed={sorted(self._rules)}>"

    def inject(
        self,
        site: str,
        *,
        nth: int | None = None,
        probability: float | None = None,
        seed: int = 0,
        times: int | None = None,
    ) -> FaultRule:
        """Arm ``site``: fail its ``nth`` call from now (and ``times - 1`` more), and/or each call with ``probability``.

        Re-arming a site replaces its rule. Raises :class:`InvalidArgumentError` naming the site
        for a malformed request, with nothing armed.
        """
        if not isinstance(site, str) or "." not in site.strip(".") or site != site.strip():
            raise InvalidArgumentError(f"fault site {site!r}: the name must be '<owner>.<what>'")
        if nth is None and probability is None:
            raise InvalidArgumentError(f"fault site {site!r}: give nth= and/or probability=")
        if nth is not None and (type(nth) is not int or nth < 1):
            raise InvalidArgumentError(f"fault site {site!r}: nth must be an int >= 1, got {nth!r}")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise InvalidArgumentError(f"fault site {site!r}: probability must be in [0, 1], got {probability!r}")
        if times is not None and (nth is None or type(times) is not int or times < 1):
            raise InvalidArgumentError(f"fault site {site!r}: times (with nth) must be an int >= 1, got {times!r}")
        counts = self._counts.setdefault(site, _Counts())
        rule = FaultRule(
            site=site,
            nth=nth,
            probability=probability or 0.0,
            times=times if times is not None else 1,
            draw=random.Random(f"{seed}:{site}").random,
            base=counts.calls,
        )
        self._rules[site] = rule
        return rule

    def clear(self, site: str | None = None) -> None:
        """Disarm ``site`` (or every site); counters are kept."""
        if site is None:
            self._rules.clear()
        else:
            self._rules.pop(site, None)

    def should_fail(self, site: str) -> bool:
        """Count a call of ``site``; True when the caller must fail now (never sleeps)."""
        rule = self._rules.get(site)
        with sync.backend().critical():
            counts = self._counts.get(site)
            if counts is None:
                counts = self._counts[site] = _Counts()
            counts.calls += 1
            if rule is None:
                return False
            k = counts.calls - rule.base
            fail = rule.nth is not None and rule.nth <= k < rule.nth + rule.times
            if rule.probability and rule.draw() < rule.probability:
                fail = True
            if fail:
                rule.failed += 1
                counts.failed += 1
                counts.history.append(counts.calls)
        if fail and LOG.on:
            LOG.event("fault.injected", site=site, call=counts.calls)
        return fail

    def calls(self, site: str) -> int:
        """How many times ``site`` was asked."""
        counts = self._counts.get(site)
        return counts.calls if counts is not None else 0

    def failures(self, site: str) -> list[int]:
        """The call numbers (counted from the first call ever) at which ``site`` failed."""
        counts = self._counts.get(site)
        return list(counts.history) if counts is not None else []

    def armed(self) -> list[str]:
        """The sites with a rule, sorted."""
        return sorted(self._rules)
