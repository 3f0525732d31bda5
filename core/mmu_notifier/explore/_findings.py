"""What one execution found: the detectors' verdicts as plain data.

Each detector of the explorer turns an observation into a :class:`Problem`:

* an exception escaping a model thread is classified by :func:`from_exception`
  (use after free and double free carry the free site the core recorded and
  the access site read from the traceback, as KASAN prints both);
* a run in which every non-daemon thread is blocked is explained by
  :func:`deadlock` as a wait-for cycle, as the hung-task detector plus lockdep
  would;
* the lock-order graph (:mod:`.lockdep`) and the end-of-run checks build
  theirs directly.

A problem is *predictive* when the run itself went fine but shows that another
interleaving can fail (lockdep's lock-order inversion); exploration goes on
past predictive problems and stops at the first real one.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mmu_notifier import sync
from mmu_notifier.errors import (
    DeadlockError,
    DoubleFreeError,
    Site,
    SleepInAtomicError,
    UseAfterFreeError,
)
from mmu_notifier.explore._describe import describe, short_path

if TYPE_CHECKING:
    from mmu_notifier.explore._scheduler import ModelThread


class Kind(StrEnum):
    """The detectors, by the name a report prints."""

    USE_AFTER_FREE = "use-after-free"
    DOUBLE_FREE = "double-free"
    LEAK = "leak"
    DEADLOCK = "deadlock"
    SLEEP_IN_ATOMIC = "sleep-in-atomic"
    LOCK_ORDER = "lock-order-inversion"
    HELD_AT_EXIT = "held-at-exit"
    EXCEPTION = "exception"
    INVARIANT = "invariant"


class Violation(Exception):
    """An end-of-run invariant a scenario or plugin declared does not hold."""

    kind = Kind.INVARIANT


class Leak(Violation):
    """An object was allocated and never freed, though the scenario waited for every free."""

    kind = Kind.LEAK


@dataclass(slots=True)
class Problem:
    """One finding of one execution, before it is turned into a report.

    ``step`` is the index of the trace step during (or after) which the problem
    showed; ``details`` holds the detector's extra lines (free site, access
    site, wait-for cycle ...), in the order a report prints them.
    """

    kind: Kind
    message: str
    thread: str | None
    step: int
    details: dict[str, str] = field(default_factory=dict)
    predictive: bool = False

    @property
    def signature(self) -> tuple[str, str]:
        """What makes two findings "the same bug": kind plus where it shows.

        Used to deduplicate findings across schedules and to check that a
        minimised or replayed schedule still fails the same way.
        """
        where = self.details.get("access site") or self.details.get("site") or ""
        return (self.kind.value, where.rsplit(" in ", 1)[-1] if where else "")


#: Functions of the core's poisoning machinery (in ``mmu_notifier/kmem.py``, whose
#: ``POISON_FRAMES`` they mirror; the engine does not import the model): the access site is their caller.
_POISON_FRAMES = frozenset({"touch", "poison", "__getattribute__", "__setattr__"})
_NOTIFIER_FILE = os.path.join("mmu_notifier", "kmem.py")
_SCHEDULER_FILE = os.path.join("explore", "_scheduler.py")
#: innermost frames a report prints
_STACK_DEPTH = 5


def _frames(tb: TracebackType | None) -> list[traceback.FrameSummary]:
    """The traceback's frames, outermost first: file, line and function only.

    Not :func:`traceback.extract_tb`, which also reads every source line and
    its column positions: a report prints neither, and a racy scenario fails
    in thousands of schedules.
    """
    out = []
    while tb is not None:
        code = tb.tb_frame.f_code
        out.append(traceback.FrameSummary(code.co_filename, tb.tb_lineno, code.co_name, lookup_line=False))
        tb = tb.tb_next
    return out


def _site(frame: traceback.FrameSummary) -> str:
    return f"{short_path(frame.filename)}:{frame.lineno} in {frame.name}"


_PATH = re.compile(r"\S+\.py")


def _shorten_paths(text: str) -> str:
    """Shorten every file path in a site string the core recorded."""
    return _PATH.sub(lambda m: short_path(m.group(0)), text)


_SYNC_FILE = os.path.join("mmu_notifier", "sync.py")
_ENGINE_DIR = os.path.join("mmu_notifier", "explore", "")
_GREENLET_DIR = os.sep + "greenlet" + os.sep


#: frames a lock acquisition keeps (raw: formatted only when a report prints them)
_RAW_DEPTH = 10
#: a stack as captured: (code, instruction offset) pairs, innermost first; :func:`format_stack` finds the lines
RawStack = tuple[tuple[Any, int], ...]


def stack_here() -> RawStack:
    """The running thread's innermost frames, raw and cheap (a lock acquisition takes one each time).

    Each frame is kept as its code and the offset of its current instruction
    (reading ``f_lineno`` would decode the line table of every frame at every
    acquisition); :func:`format_stack` turns them into ``file:line in f``
    lines when a report needs them. The caller's own frame (the scheduler's
    point) is left out.
    """
    frame: Any = sys._getframe(2)
    out: list[tuple[Any, int]] = []
    for _ in range(_RAW_DEPTH):
        if frame is None:
            break
        out.append((frame.f_code, frame.f_lasti))
        frame = frame.f_back
    return tuple(out)


def _line(code: Any, offset: int) -> int:
    """The source line of the instruction at ``offset`` in ``code`` (what the frame's ``f_lineno`` said then)."""
    for start, end, line in code.co_lines():
        if start <= offset < end:
            return int(line) if line is not None else code.co_firstlineno
    return int(code.co_firstlineno)


def format_stack(raw: RawStack, depth: int = _STACK_DEPTH) -> tuple[str, ...]:
    """The model frames of a raw stack as ``file:line in f``, innermost first.

    Skips the primitives' own frames (:mod:`mmu_notifier.sync`) and the
    engine's, so the first entry is the model line that takes the lock.
    """
    out: list[str] = []
    for code, offset in raw:
        name = code.co_filename
        if not (name.endswith(_SYNC_FILE) or _ENGINE_DIR in name or _GREENLET_DIR in name):
            out.append(f"{short_path(name)}:{_line(code, offset)} in {code.co_name}")
            if len(out) >= depth:
                break
    return tuple(out)


def _site_lines(label: str, site: Site | None) -> dict[str, str]:
    """A report's lines for a recorded allocation or free: who and when, then the stack."""
    if site is None:
        return {}
    lines = {label: _shorten_paths(site.text())}
    if len(site.stack) > 1:
        lines[f"{label} stack"] = " <- ".join(_shorten_paths(f) for f in site.stack)
    return lines


def _model_frames(frames: list[traceback.FrameSummary]) -> list[traceback.FrameSummary]:
    """The frames of model code: without the scheduler's own and the poisoning machinery."""
    return [
        f
        for f in frames
        if not f.filename.endswith(_SCHEDULER_FILE)
        and not (f.name in _POISON_FRAMES and f.filename.endswith(_NOTIFIER_FILE))
    ]


def from_exception(error: BaseException, thread: str | None, step: int) -> Problem:
    """Classify an exception raised inside a model thread (or an end-of-run check)."""
    frames = _model_frames(_frames(error.__traceback__))
    details: dict[str, str] = {}
    if frames:
        details["site"] = _site(frames[-1])
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    stack = " <- ".join(_site(f) for f in reversed(frames[-_STACK_DEPTH:])) if frames else "?"
    if isinstance(error, UseAfterFreeError):
        # KASAN's order: the bad access (thread, step, stack), then "Allocated by", then "Freed by"
        kind = Kind.DOUBLE_FREE if isinstance(error, DoubleFreeError) else Kind.USE_AFTER_FREE
        who = f"thread {thread} at step {step}: " if thread else ""
        site = details.get("site", "?")
        details = {
            "access site" if kind is Kind.USE_AFTER_FREE else "second free": site,
            "access" if kind is Kind.USE_AFTER_FREE else "second free by": f"{who}{site}",
            "stack": stack,
            **_site_lines("allocated by", error.alloc),
            **_site_lines("freed by", error.free),
            "free site": _shorten_paths(error.free_site or "?"),
        }
        return Problem(kind, first_line, thread, step, details)
    elif isinstance(error, SleepInAtomicError):
        kind = Kind.SLEEP_IN_ATOMIC
    elif isinstance(error, DeadlockError):
        kind = Kind.DEADLOCK
    else:
        kind = error.kind if isinstance(error, Violation) else Kind.EXCEPTION
        if kind is Kind.EXCEPTION:
            first_line = f"{type(error).__name__}: {first_line}"
    details["stack"] = stack
    return Problem(kind, first_line, thread, step, details)


# -- deadlock ------------------------------------------------------------------


def holders(resource: object) -> list[sync.Task]:
    """The tasks that keep ``resource`` unavailable, for the wait-for graph.

    Locks have owners; an SRCU domain is held by every task inside one of its
    read sections; completions and wait queues have no owner (whoever could
    signal them is not known to the model).
    """
    kind = type(resource)
    if kind is sync.Mutex or kind is sync.SpinLock:
        owner = resource.owner  # type: ignore[attr-defined]
        return [owner] if owner is not None else []
    if kind is sync.RWSemaphore:
        writer = resource.writer  # type: ignore[attr-defined]
        return ([writer] if writer is not None else []) + list(resource.readers)  # type: ignore[attr-defined]
    return []


def _srcu_holders(resource: object, threads: list[ModelThread]) -> list[sync.Task]:
    return [t.task for t in threads if t.task.srcu_depth.get(resource)]


def deadlock(
    blocked: list[ModelThread],
    live: list[ModelThread],
    step: int,
    acquired: dict[tuple[int, int], tuple[int, RawStack]] | None = None,
) -> Problem:
    """Explain a run where no thread can go on: the wait-for cycle, or who waits on what.

    A blocked thread whose condition already holds was never woken: that is
    reported as a lost wake-up, the bug being in whoever changed the state.
    ``acquired`` maps (lock id, thread index) to the step and stack of the
    acquisition, so each holder's line says where it took the lock (lockdep's
    "holding" list).
    """
    acquired = acquired or {}
    by_task = {t.task: t for t in live}
    lines: dict[str, str] = {}
    for t in blocked:
        ready = t.ready
        if ready is not None and ready():
            lines[t.name] = f"lost wake-up: waits in {t.op} on {describe(t.res)} whose condition holds"
    if lines:
        return Problem(
            Kind.DEADLOCK,
            "lost wake-up: a waiter's condition holds but it was never woken",
            None,
            step,
            lines,
        )

    def waits_for(t: ModelThread) -> list[ModelThread]:
        owners = holders(t.res) or _srcu_holders(t.res, live)
        return [by_task[o] for o in owners if o in by_task and o is not t.task]

    cycle = _find_cycle(blocked, waits_for)
    for t in blocked:
        owner_tasks = holders(t.res) or _srcu_holders(t.res, live)
        owners = [o.name for o in owner_tasks]
        held = f" held by {', '.join(owners)}" if owners else " (no owner: nothing left to signal it)"
        lines[t.name] = f"blocked in {t.op} on {describe(t.res)}{held}"
        for o in owner_tasks:
            holder = by_task.get(o)
            got = acquired.get((id(t.res), holder.idx)) if holder is not None else None
            if got is not None:
                lines[f"{o.name} took {describe(t.res)}"] = f"at step {got[0]}: " + (
                    " <- ".join(format_stack(got[1])) or "?"
                )
    if cycle:
        path = " -> ".join(f"{t.name} [{t.op} {describe(t.res)}]" for t in cycle)
        lines = {"wait-for cycle": f"{path} -> {cycle[0].name}", **lines}
        message = (
            "threads wait for each other: " + " -> ".join(t.name for t in cycle) + f" -> {cycle[0].name}"
        )
    else:
        message = "every thread is blocked and none can wake another"
    return Problem(Kind.DEADLOCK, message, None, step, lines)


def _find_cycle(
    nodes: list[ModelThread], follow: Callable[[ModelThread], list[ModelThread]]
) -> list[ModelThread]:
    """The first cycle reachable in the wait-for graph, in wait order."""
    for start in nodes:
        path: list[ModelThread] = [start]
        seen = {start.idx}
        while True:
            nexts = follow(path[-1])
            if not nexts:
                break
            nxt = nexts[0]
            if nxt.idx in seen:
                return path[path.index(nxt) :]
            seen.add(nxt.idx)
            path.append(nxt)
    return []
