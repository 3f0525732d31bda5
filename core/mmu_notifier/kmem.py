"""The allocator room: freeing model objects and catching every later touch (``mm/slab`` with KASAN).

Models what a kernel built with KASAN reports about slab memory: after
``kfree(obj)`` any read or write of ``obj`` is a *use after free* naming the
access and the free site; a second ``kfree`` is a *double free* naming both
sites. The core frees a subscription this way when ``free_notifier`` returns
(:mod:`mmu_notifier.notifier`), :func:`mmu_notifier.legacy.kfree` when a
pre-series driver frees its own, and a driver model frees its own
``kmalloc``'ed objects (a process, a per-mm struct) with :func:`kfree`.

How it works, and where it differs from the kernel: an object is "poisoned"
by swapping its class for a subclass whose ``__getattribute__`` and
``__setattr__`` raise :class:`~mmu_notifier.errors.UseAfterFreeError`. The
live object pays nothing on its hot paths (no flag tested on each access), and
the memory is not reused, so every later touch is caught, not only those that
hit a redzone or a quarantined slot as KASAN's are. Objects must have a
``__dict__`` (the free site is kept there).

The poisoned class carries the marker :data:`POISON_MARK` (a class attribute
set to ``True``) and has the live class as its first base: code that may not
import the model (the explorer's engine, which names the objects a step acts
on) reads those two facts instead of calling :func:`is_freed` and
:func:`allocated_class`. Stack frames of the functions in
:data:`POISON_FRAMES`, in this file, are the poisoning machinery: a report's
access site is their caller.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, TypeVar

from mmu_notifier import sync
from mmu_notifier.errors import DoubleFreeError, Site, UseAfterFreeError
from mmu_notifier.workqueue import Work, check_work_free

__all__ = [
    "POISON_FRAMES",
    "POISON_MARK",
    "Site",
    "alloc_record",
    "allocated_class",
    "call_site",
    "free_record",
    "free_site",
    "is_freed",
    "kfree",
    "kmalloc",
    "note_alloc",
    "poison",
]

#: Class attribute (``True``) of every poisoned class: what the explorer's engine tests without importing this module.
POISON_MARK = "_poisoned"
#: Names of the poisoning machinery's frames in this file; a report's access site is their caller.
POISON_FRAMES = frozenset({"touch", "poison", "__getattribute__", "__setattr__"})

_T = TypeVar("_T")
_poisoned_classes: dict[type, type] = {}


def _stem(filename: str) -> str:
    return filename.rsplit(".", 1)[0]


_HERE = _stem(__file__)
#: frames of these core modules are skipped when recording where something was freed
_CORE_FILES = frozenset({_HERE, _HERE.rsplit("kmem", 1)[0] + "notifier", _HERE.rsplit("kmem", 1)[0] + "legacy"})


def call_site(skip_core: bool = True) -> str:
    """``file:line in function`` of the first caller outside the core's allocator, notifier and legacy modules.

    That is the driver (or test) line that freed or put an object, which is what
    a KASAN report's "freed by" stack points the reader to.
    """
    frame = sys._getframe(1)
    while frame is not None and skip_core and _stem(frame.f_code.co_filename) in _CORE_FILES:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "?"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


#: innermost frames a recorded allocation or free keeps
STACK_DEPTH = 6
_SKIP_DIRS = (os.path.join("mmu_notifier", "explore", ""), os.sep + "greenlet" + os.sep)


@functools.cache
def _is_core(filename: str) -> bool:
    """A frame of the allocator, notifier or legacy module (decided once per file: every free asks)."""
    return _stem(filename) in _CORE_FILES


@functools.cache
def _is_skipped(filename: str) -> bool:
    """A frame of the explorer's engine or of greenlet, which a recorded stack leaves out."""
    return any(d in filename for d in _SKIP_DIRS)


class _Recorded:
    """A site as recorded: the frames raw (code and instruction offset), formatted into a :class:`Site` when read.

    Every allocation and free records one, and nearly none is ever read (only a
    report reads them), so recording keeps what the frames are executing and
    leaves decoding line numbers and building strings to :func:`_site`.
    """

    __slots__ = ("where", "thread", "step", "frames")

    def __init__(self, where: str | None, thread: str, step: int | None, frames: tuple[tuple[Any, int], ...]) -> None:
        self.where = where
        self.thread = thread
        self.step = step
        self.frames = frames


def _line(code: Any, offset: int) -> int:
    """The line of the instruction at ``offset`` in ``code``: what the frame's ``f_lineno`` read when recorded."""
    for start, end, line in code.co_lines():
        if start <= offset < end:
            return int(line) if line is not None else int(code.co_firstlineno)
    return int(code.co_firstlineno)


def _site(state: dict[str, Any], key: str) -> Site | None:
    """The :class:`Site` kept under ``key`` in an object's ``__dict__``, formatted (once) if still raw."""
    record = state.get(key)
    if type(record) is _Recorded:
        stack = tuple(f"{code.co_filename}:{_line(code, offset)} in {code.co_name}" for code, offset in record.frames)
        where = record.where if record.where is not None else (stack[0] if stack else "?")
        record = state[key] = Site(where, record.thread, record.step, stack)
    return record


def _record(where: str | None = None) -> _Recorded:
    """The caller's site, raw: first frame outside the allocator, the task, the step and the stack.

    Frames of the allocator, notifier and legacy modules are skipped (as
    :func:`call_site`), and so are the explorer's scheduler frames below the
    model thread's function. ``where`` (a free's site, named by its caller)
    replaces the innermost frame as the site's ``where``.
    """
    frame = sys._getframe(2)
    while frame is not None and _is_core(frame.f_code.co_filename):
        frame = frame.f_back  # type: ignore[assignment]
    frames: list[tuple[Any, int]] = []
    while frame is not None and len(frames) < STACK_DEPTH:
        code = frame.f_code
        if not _is_skipped(code.co_filename):
            frames.append((code, frame.f_lasti))
        frame = frame.f_back  # type: ignore[assignment]
    backend = sync.backend()
    return _Recorded(where, backend.current().name, backend.step(), tuple(frames))


def note_alloc(obj: object) -> None:
    """Record where ``obj`` was allocated (thread, step, stack) for a later use-after-free report.

    The core calls it for every subscription (``MMUNotifier.__init__``); a driver
    model records its own ``kmalloc``'ed objects with :func:`kmalloc`. The explorer
    marks the allocation on the timeline.
    """
    site = _record()
    try:
        object.__getattribute__(obj, "__dict__")["_alloc"] = site
    except AttributeError:
        return  # no __dict__: nothing to keep the record in
    sync.backend().note("kmalloc", allocated_class(obj).__name__)


def kmalloc(obj: _T) -> _T:
    """``kmalloc``: return ``obj``, recording its allocation site for KASAN-style reports.

    Use it where a driver model allocates what it later frees with :func:`kfree`:
    ``process = kmem.kmalloc(KFDProcess())``.
    """
    note_alloc(obj)
    return obj


def alloc_record(obj: object) -> Site | None:
    """Where ``obj`` was allocated, if it was recorded (:func:`kmalloc`, or a subscription)."""
    try:
        state = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return None
    return _site(state, "_alloc")


def free_record(obj: object) -> Site | None:
    """Where ``obj`` was freed (thread, step, stack), or ``None`` if it is live."""
    if not is_freed(obj):
        return None
    return _site(object.__getattribute__(obj, "__dict__"), "_free")


def _poisoned_class(cls: type) -> type:
    """The poisoned subclass of ``cls`` (made once per class, then cached)."""
    poisoned = _poisoned_classes.get(cls)
    if poisoned is not None:
        return poisoned

    def touch(self: Any, name: str, *value: Any) -> Any:
        state = object.__getattribute__(self, "__dict__")
        freed_by = state.get("_freed_by", "kfree")
        raise UseAfterFreeError(
            f"{cls.__name__}.{name} touched after {freed_by}",
            free_site=state.get("_free_site"),
            free=_site(state, "_free"),
            alloc=_site(state, "_alloc"),
        )

    def describe_freed(self: Any) -> str:
        return f"<freed {cls.__name__} at {id(self):#x}>"

    # ``__slots__ = ()``: the subclass adds no storage, so the class swap keeps the object's layout
    namespace: dict[str, Any] = {
        "__slots__": (),
        "__getattribute__": touch,
        "__setattr__": touch,
        "__repr__": describe_freed,
        POISON_MARK: True,
    }
    poisoned = type(f"Freed{cls.__name__}", (cls,), namespace)
    _poisoned_classes[cls] = poisoned
    return poisoned


def is_freed(obj: object) -> bool:
    """True once ``obj``'s memory was freed (it is poisoned)."""
    return bool(getattr(type(obj), POISON_MARK, False))


def allocated_class(obj: object) -> type:
    """The class ``obj`` had while it was live (its own class if it was never freed)."""
    cls = type(obj)
    return cls.__mro__[1] if getattr(cls, POISON_MARK, False) else cls


def free_site(obj: object) -> str | None:
    """Where ``obj`` was freed (``file:line in function``), or ``None`` if it is live."""
    if not is_freed(obj):
        return None
    site: str | None = object.__getattribute__(obj, "__dict__").get("_free_site")
    return site


def check_free(obj: object, site: str) -> None:
    """The debug checks the kernel runs on memory being freed, before anything changes.

    lockdep's ``debug_check_no_locks_freed`` (a lock inside ``obj`` still held or
    waited for: :class:`~mmu_notifier.errors.LockFreedError` naming both sites) and
    debugobjects' check for an active ``work_struct`` inside it
    (:class:`~mmu_notifier.errors.ActiveObjectFreedError`, a use after free in kind). Only ``obj``'s own attributes are
    looked at, not objects they point to, as the kernel checks only the freed range.
    """
    if _may_hold_active(obj):
        sync.check_no_locks_freed(obj, site)
        check_work_free(obj, site)


#: what the two checks of :func:`check_free` look for in the freed object's attributes
_ACTIVE_KINDS = (sync.Mutex, sync.SpinLock, sync.RWSemaphore, Work)


def _may_hold_active(obj: object) -> bool:
    """``obj`` is a work item or has an attribute that is a lock or a work item: :func:`check_free` must look.

    One pass with ``type()`` and ``object.__getattribute__`` only (an attribute may be a freed
    object, which raises on any access); nearly every freed object holds neither, and then
    both checks would find nothing.
    """
    if issubclass(type(obj), Work):
        return True
    return any(issubclass(type(value), _ACTIVE_KINDS) for _, value in sync.attributes(obj))


def poison(obj: object, site: str, freed_by: str = "kfree") -> None:
    """Mark ``obj`` freed at ``site``: every later access raises :class:`UseAfterFreeError` naming ``freed_by``.

    The primitive under :func:`kfree`, for callers that record a site other than
    their caller's (the core's deferred ``free_notifier`` names the ``put``).
    Raises :class:`DoubleFreeError` naming the first free site when ``obj`` was
    freed already, and changes nothing then.
    """
    if is_freed(obj):
        first = free_site(obj)
        raise DoubleFreeError(
            f"{allocated_class(obj).__name__} freed twice (again at {site})",
            free_site=first,
            free=free_record(obj),
            alloc=alloc_record(obj),
        )
    check_free(obj, site)
    state = obj.__dict__
    state["_free_site"] = site
    state["_freed_by"] = freed_by
    state["_free"] = _record(site)
    obj.__class__ = _poisoned_class(type(obj))
    sync.backend().note(freed_by, type(obj).__mro__[1].__name__)
    sync.backend().touch("kfree", obj)  # the explorer orders frees with the list walks that read them


def kfree(obj: object) -> None:
    """``kfree(obj)``: any later access raises :class:`UseAfterFreeError` naming this call site.

    Raises :class:`DoubleFreeError` if ``obj`` was freed already (KASAN's
    "double-free or invalid-free"), naming both free sites.
    """
    poison(obj, call_site(), freed_by="kfree")
