"""Human-readable names for the things a step acts on, safe on freed objects.

A step's resource may be a subscription the core has poisoned; ``isinstance``
and ``getattr`` on it would raise :class:`UseAfterFreeError` (``isinstance``
falls back to ``obj.__class__``), so everything here looks only at
``type(obj)`` and reads ``.name`` only from the model's own primitives, which
are never freed.
"""

from __future__ import annotations

import os

from mmu_notifier import sync
from mmu_notifier.srcu import Srcu

#: Primitive types whose ``name`` is their lock class / identity.
_NAMED: dict[type, str] = {
    sync.Mutex: "mutex",
    sync.SpinLock: "spinlock",
    sync.RWSemaphore: "rwsem",
    sync.WaitQueue: "waitqueue",
    sync.Completion: "completion",
    sync.Atomic: "atomic",
    Srcu: "srcu",
}


def _class_name(resource: object) -> str:
    """The object's class name; for a poisoned (freed) object, that of the class it had."""
    cls = type(resource)
    if getattr(cls, "_poisoned", False):
        cls = cls.__mro__[1]
    return cls.__name__


def kind(resource: object) -> str:
    """The resource kind that enters a trace fingerprint (stable across runs)."""
    return "-" if resource is None else _class_name(resource)


def describe(resource: object, with_kind: bool = True) -> str:
    """``mutex mmap_lock``, ``srcu notifier``, ``KFDProcess`` ... for reports.

    ``with_kind=False`` drops the primitive's kind (``mmap_lock``), for places
    where the operation already names it.
    """
    if resource is None:
        return ""
    label = _NAMED.get(type(resource))
    if label is not None:
        name: str = resource.name  # type: ignore[attr-defined]
        return f"{label} {name}" if with_kind else name
    return _class_name(resource)


def short_path(filename: str) -> str:
    """A file name as a report prints it: from the package root, else relative to cwd."""
    marker = f"{os.sep}mmu_notifier{os.sep}"
    at = filename.rfind(marker)
    if at >= 0:
        return filename[at + 1 :]
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel
