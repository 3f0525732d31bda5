"""An executable model of the Linux 5.4 mmu_notifier subsystem (get/put registration) and 5.5's interval notifiers.

The public API, by kernel concept:

* address spaces: :class:`MM` (VMAs, CPU page table, ``mm_users``/``mm_count``,
  ``mmap_lock``) on a :class:`Kernel` (notifier SRCU, drivers, physical memory);
* registration: :func:`get`, :func:`get_locked`, :func:`put`,
  :func:`register`, :func:`register_locked`, :func:`unregister`,
  :func:`synchronize`;
* drivers: subclass :class:`Driver`, implement hooks from
  :mod:`mmu_notifier.hookspecs` marked with :data:`hookimpl`, and embed your
  per-mm state in a subclass of :class:`MMUNotifier`;
* interval notifiers (5.5): :class:`MMUIntervalNotifier`,
  :func:`interval_notifier_insert`, :func:`interval_notifier_insert_locked`,
  :func:`interval_notifier_remove`, :func:`interval_read_begin`,
  :func:`interval_read_retry`, :func:`interval_check_retry`,
  :func:`interval_set_seq`; the driver's ``invalidate`` hook;
* invalidations: :class:`Range` and :class:`Event`; dispatchers in
  :mod:`mmu_notifier.notifier`;
* the conformance kit's way in: the ``exerciser`` hook returns an
  :class:`Exerciser` giving out :class:`Handle` objects; a driver declares
  what the kit may expect with the :class:`Capability` names;
* primitives a driver model may use: :mod:`mmu_notifier.sync`, and the
  allocator room :mod:`mmu_notifier.kmem` (``kfree``, ``is_freed``: freed
  objects report use after free and double free with their free site).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmu_notifier import kmem
    from mmu_notifier.config import DriverConfig
    from mmu_notifier.errors import (
        ActiveObjectFreedError,
        BadAddressError,
        BusyError,
        ConfigError,
        DeadlockError,
        DoubleFreeError,
        InterruptedCallError,
        InvalidArgumentError,
        KernelError,
        MisuseError,
        ModelBug,
        NoMemoryError,
        PluginError,
        PluginWarning,
        RangeOverflowError,
        RefcountOverflowError,
        SleepInAtomicError,
        TryAgainError,
        UseAfterFreeError,
    )
    from mmu_notifier.exerciser import Capability, Exerciser, Handle
    from mmu_notifier.hookspecs import hookimpl
    from mmu_notifier.interval import (
        MMUIntervalNotifier,
        interval_check_retry,
        interval_notifier_insert,
        interval_notifier_insert_locked,
        interval_notifier_remove,
        interval_read_begin,
        interval_read_retry,
        interval_set_seq,
    )
    from mmu_notifier.kernel import Kernel, default_kernel
    from mmu_notifier.mm import MM, RW, VMA, Prot
    from mmu_notifier.notifier import (
        MMUNotifier,
        get,
        get_locked,
        put,
        register,
        register_locked,
        synchronize,
        unregister,
    )
    from mmu_notifier.pagetable import PTE
    from mmu_notifier.plugins import Driver, MMUNotifierOps
    from mmu_notifier.range import Event, Range

#: where each public name lives. Importing the package imports none of them: a
#: name's module is imported on first use (module ``__getattr__``), so
#: ``import mmu_notifier`` and ``mmu-notifier --version`` do not pay for
#: pydantic, structlog, pluggy or the model (issue 18). The API is unchanged:
#: ``from mmu_notifier import MM`` and ``mmu_notifier.MM`` work as before.
_LAZY: dict[str, str] = {
    "kmem": "mmu_notifier.kmem",
    "DriverConfig": "mmu_notifier.config",
    **dict.fromkeys(
        (
            "ActiveObjectFreedError", "BadAddressError", "BusyError", "ConfigError", "DeadlockError",
            "DoubleFreeError", "InterruptedCallError", "InvalidArgumentError", "KernelError", "MisuseError",
            "ModelBug", "NoMemoryError", "PluginError", "PluginWarning", "RangeOverflowError", "RefcountOverflowError",
            "SleepInAtomicError", "TryAgainError", "UseAfterFreeError",
        ),
        "mmu_notifier.errors",
    ),
    **dict.fromkeys(("Capability", "Exerciser", "Handle"), "mmu_notifier.exerciser"),
    "hookimpl": "mmu_notifier.hookspecs",
    **dict.fromkeys(
        (
            "MMUIntervalNotifier", "interval_check_retry", "interval_notifier_insert",
            "interval_notifier_insert_locked", "interval_notifier_remove", "interval_read_begin",
            "interval_read_retry", "interval_set_seq",
        ),
        "mmu_notifier.interval",
    ),
    **dict.fromkeys(("Kernel", "default_kernel"), "mmu_notifier.kernel"),
    **dict.fromkeys(("MM", "RW", "VMA", "Prot"), "mmu_notifier.mm"),
    **dict.fromkeys(
        (
            "MMUNotifier", "get", "get_locked", "put", "register", "register_locked", "synchronize",
            "unregister",
        ),
        "mmu_notifier.notifier",
    ),
    "PTE": "mmu_notifier.pagetable",
    **dict.fromkeys(("Driver", "MMUNotifierOps"), "mmu_notifier.plugins"),
    **dict.fromkeys(("Event", "Range"), "mmu_notifier.range"),
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use and cache the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmu_notifier' has no attribute {name!r}")
    imported = importlib.import_module(module)
    value = imported if module == f"mmu_notifier.{name}" else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "MM",
    "PTE",
    "RW",
    "VMA",
    "ActiveObjectFreedError",
    "BadAddressError",
    "BusyError",
    "Capability",
    "ConfigError",
    "DeadlockError",
    "DoubleFreeError",
    "Driver",
    "DriverConfig",
    "Event",
    "Exerciser",
    "Handle",
    "InterruptedCallError",
    "InvalidArgumentError",
    "Kernel",
    "KernelError",
    "MMUIntervalNotifier",
    "MMUNotifier",
    "MMUNotifierOps",
    "MisuseError",
    "ModelBug",
    "NoMemoryError",
    "PluginError",
    "PluginWarning",
    "Prot",
    "Range",
    "RangeOverflowError",
    "RefcountOverflowError",
    "SleepInAtomicError",
    "TryAgainError",
    "UseAfterFreeError",
    "default_kernel",
    "get",
    "get_locked",
    "hookimpl",
    "interval_check_retry",
    "interval_notifier_insert",
    "interval_notifier_insert_locked",
    "interval_notifier_remove",
    "interval_read_begin",
    "interval_read_retry",
    "interval_set_seq",
    "kmem",
    "put",
    "register",
    "register_locked",
    "synchronize",
    "unregister",
]
