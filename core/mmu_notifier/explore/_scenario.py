"""Scenarios: a small concurrent world, rebuilt fresh for every schedule.

A :class:`Scenario` is plain, frozen data (a name and a ``build`` function),
so a plugin can return a list of them from a hook. ``build()`` is called once
per execution, under the explorer's backend, and returns a
:class:`ScenarioInstance`: the model threads to interleave, an optional
``finale`` (run as one more thread once every scenario thread has finished:
the module-exit ``synchronize``), and the end-of-run checks (invariants such as
"no leak after synchronize" or "the kernel logged no warning").

A check reports a failure by raising :class:`Violation` (or a subclass such as
:class:`Leak`); an ``AssertionError`` or any model exception counts too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from mmu_notifier.explore._findings import Leak

Fn = TypeVar("Fn", bound=Callable[[], object])


@dataclass(slots=True)
class ScenarioInstance:
    """One execution's fresh world: threads in a fixed order, the finale and the checks."""

    threads: list[tuple[str, Callable[[], object]]] = field(default_factory=list)
    finale: Callable[[], object] | None = None
    checks: list[Callable[[], object]] = field(default_factory=list)

    def thread(self, name: str) -> Callable[[Fn], Fn]:
        """Decorator: add a model thread called ``name`` (threads start in declaration order)."""

        def add(fn: Fn) -> Fn:
            self.threads.append((name, fn))
            return fn

        return add

    def check(self, fn: Fn) -> Fn:
        """Decorator: add an end-of-run check (raise :class:`Violation` to fail)."""
        self.checks.append(fn)
        return fn


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named, explorable concurrent flow.

    ``expect`` names the finding kind a demonstration scenario exists to show
    (``"use-after-free"``), or is ``None`` for a flow that must stay clean.
    ``version`` is part of every schedule's fingerprint: bump it when the
    scenario changes meaning, so old schedules are reported stale instead of
    replaying something else. ``max_steps`` is the livelock guard.
    """

    name: str
    build: Callable[[], ScenarioInstance]
    description: str = ""
    expect: str | None = None
    version: int = 1
    max_steps: int = 5000


class LeakTracker:
    """Counts allocations and frees of a scenario's objects, for a :class:`Leak` check.

    The kernel analogue is kmemleak; a scenario's driver calls :meth:`alloc`
    from ``alloc_notifier`` and :meth:`free` from ``free_notifier``, and the
    instance adds :meth:`check` after its finale waited for every free.
    """

    __slots__ = ("live", "what")

    def __init__(self, what: str = "object") -> None:
        self.what = what
        self.live: dict[int, str] = {}

    def alloc(self, obj: object, site: str) -> None:
        """Record that ``obj`` was allocated at ``site``."""
        self.live[id(obj)] = site

    def free(self, obj: object) -> None:
        """Record that ``obj`` was freed."""
        self.live.pop(id(obj), None)

    def check(self) -> None:
        """Raise :class:`Leak` naming every allocation still live."""
        if self.live:
            sites = "; ".join(sorted(self.live.values()))
            raise Leak(f"{len(self.live)} {self.what}(s) never freed (allocated at {sites})")
