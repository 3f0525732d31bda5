"""Exception types of the model.

Two families, as the kernel has two ways to say "no":

* :class:`KernelError` subclasses carry an errno, the value a kernel function
  would return (``-EOVERFLOW`` from ``mmu_notifier_get``, ``-EFAULT`` from
  ``hmm_range_register`` ...). Callers are expected to handle them.
* :class:`ModelBug` subclasses are what the kernel reports with WARN, BUG,
  lockdep or the might-sleep debug checks: the *caller* broke a rule. The model
  raises them before changing any state, so a test can catch and inspect them.
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass


class KernelError(Exception):
    """An error a kernel function returns as ``-errno``."""

    errno: int = 0

    @property
    def kernel_return(self) -> int:
        """The value the kernel function would have returned (``-errno``)."""
        return -self.errno


class TryAgainError(KernelError):
    """EAGAIN: a non-blockable operation would have had to sleep."""

    errno = _errno.EAGAIN


class RefcountOverflowError(KernelError):
    """EOVERFLOW: a reference count is at its limit (``mmu_notifier_get``)."""

    errno = _errno.EOVERFLOW


class RangeOverflowError(KernelError):
    """EOVERFLOW: a range is empty or wraps past the end of the address space (interval notifier insert)."""

    errno = _errno.EOVERFLOW


class NoMemoryError(KernelError):
    """ENOMEM: an allocation failed, or a range is not (fully) mapped."""

    errno = _errno.ENOMEM


class BadAddressError(KernelError):
    """EFAULT: an address is not mapped, or the mm is already dying."""

    errno = _errno.EFAULT


class BusyError(KernelError):
    """EBUSY: the state changed underneath the caller; retry."""

    errno = _errno.EBUSY


class InterruptedCallError(KernelError):
    """EINTR: a fatal signal is pending (``mm_take_all_locks``, killable waits)."""

    errno = _errno.EINTR


class InvalidArgumentError(KernelError):
    """EINVAL: an argument is malformed (unaligned, zero length, ...)."""

    errno = _errno.EINVAL


class PermissionDeniedError(KernelError):
    """EPERM: the operation is not allowed on that memory (``hmm_range_fault`` asked to write where the VMA
    is read-only; a userptr that is not the caller's private anonymous memory)."""

    errno = _errno.EPERM


class AccessDeniedError(KernelError):
    """EACCES: the caller lacks a right the request needs (a writable userptr without the flags that make
    writing safe)."""

    errno = _errno.EACCES


class NoSuchProcessError(KernelError):
    """ESRCH: no process is behind the mm any more, or the driver has none for it (a submission on behalf of
    an exited process; ``alloc_notifier`` finding no per-process state)."""

    errno = _errno.ESRCH


class ModelBug(Exception):
    """A rule of the kernel was broken: what the kernel reports with WARN/BUG."""


class MisuseError(ModelBug):
    """An API was called in a state where the kernel WARNs or BUGs."""


class ParameterError(MisuseError, ValueError):
    """A model object was built or configured with a value outside its domain (a machine with no
    memory, a page size that is not a power of two, an unknown log format). Raised before anything is
    built; also a :class:`ValueError`, which is what such calls raised before it existed."""


class LockingError(ModelBug):
    """A lock was released by a task that does not hold it, or taken twice."""


class LockFreedError(ModelBug):
    """Memory holding a lock was freed while the lock was held or waited for.

    Models lockdep's ``debug_check_no_locks_freed`` ("held lock freed!"). ``free_site`` is where
    the free happened; the message also names the holder's (or a waiter's) site.
    """

    def __init__(self, message: str, *, lock: object = None, free_site: str | None = None) -> None:
        super().__init__(message)
        self.lock = lock
        self.free_site = free_site


class SleepInAtomicError(ModelBug):
    """A blocking primitive was used in atomic or non-blocking context.

    Models ``might_sleep()`` ("BUG: sleeping function called from invalid
    context") and the ``non_block_start()`` debug check.
    """


class DeadlockError(ModelBug):
    """A wait that can never finish (for example ``synchronize`` inside a read section)."""


@dataclass(frozen=True, slots=True)
class Site:
    """Where something happened to an object, as KASAN's "Allocated by" / "Freed by" blocks say it.

    ``where`` is the innermost frame outside the allocator (``file:line in
    function``), ``thread`` the model task, ``step`` the explorer's step index
    (``None`` outside the explorer), ``stack`` the innermost frames, innermost first.
    """

    where: str
    thread: str | None = None
    step: int | None = None
    stack: tuple[str, ...] = ()

    def text(self) -> str:
        """``thread T at step N: file:line in f`` (the parts that are known)."""
        who = f"thread {self.thread}" if self.thread else ""
        when = f"step {self.step}" if self.step is not None else ""
        head = " at ".join(p for p in (who, when) if p)
        return f"{head}: {self.where}" if head else self.where


class UseAfterFreeError(ModelBug):
    """A freed object was touched: a field read or a callback dispatched to it.

    ``free_site`` is the free's ``file:line in function``; ``free`` and
    ``alloc`` (when recorded) carry the thread, step and stack of the free and
    of the allocation, as KASAN's report does.
    """

    def __init__(
        self,
        message: str,
        *,
        free_site: str | None = None,
        free: Site | None = None,
        alloc: Site | None = None,
    ) -> None:
        super().__init__(message if free_site is None else f"{message}\n  freed at: {free_site}")
        self.free_site = free_site
        self.free = free
        self.alloc = alloc


class DoubleFreeError(UseAfterFreeError):
    """``free_notifier`` would run a second time for the same subscription."""


class ActiveObjectFreedError(UseAfterFreeError, MisuseError):
    """Memory freed while an object inside it is still in use (a queued or running work item).

    Models debugobjects' "ODEBUG: free active object": the free itself is the report, made at
    the free site, before the worker touches the freed memory (which KASAN would report later
    as a use after free). A use after free in kind, and a misuse of the API.
    """


class PluginError(Exception):
    """A driver plugin could not be loaded: import error, bad hooks, bad signature."""

    def __init__(self, driver: str, reason: str) -> None:
        reason = " ".join(reason.split())  # one line, whatever the underlying error printed
        super().__init__(f"driver {driver!r}: {reason}")
        self.driver = driver
        self.reason = reason


class ConfigError(Exception):
    """A driver configuration is invalid; the message names driver, field, value and reason."""

    def __init__(self, driver: str, problems: list[str]) -> None:
        joined = "; ".join(problems)
        super().__init__(f"driver {driver!r}: invalid config: {joined}")
        self.driver = driver
        self.problems = problems


class UsageError(Exception):
    """Bad input from whoever drives the model: a command-line argument, or an argument of the wrong kind.

    The ``mmu-notifier`` command prints it as one line and exits with code 2;
    the explorer's engine raises it when given a scenario's name where it takes
    a :class:`~mmu_notifier.explore.Scenario` (names are looked up by
    :mod:`mmu_notifier.scenarios`).
    """


class PluginWarning(UserWarning):
    """A driver plugin loads but is probably not what its author meant (``warnings`` category).

    The loader emits it for a driver method whose name is a hook but that
    carries no ``@hookimpl`` marker: pluggy registers only marked methods, so
    the core would never call it (the kernel counterpart is an ops member
    left NULL).
    """

