"""Subscriptions, the per-mm container, registration and dispatch.

Models ``mm/mmu_notifier.c`` of Linux 5.4 after the get/put series: a
subscription (``struct mmu_notifier``) is linked on its mm's container
(``struct mmu_notifier_mm``); ``get``/``put`` share one refcounted subscription
per (driver, mm); every walk of the list is an SRCU read section of the
kernel's one notifier SRCU domain; the last ``put`` unlinks at once and defers
``free_notifier`` past a grace period, so no walker can touch freed memory.

Locking rules (as in the kernel):

* the container's spinlock guards list membership, ``users`` and the
  "still linked?" test; it is never held across a driver callback;
* registration needs the mmap lock held for write (``*_locked`` variants assert
  it, the others take it);
* callbacks run inside an SRCU read section with no core lock held.

Where the kernel WARNs and carries on, the model appends to
``kernel.warnings`` and carries on; where the issue asks for a clear error
instead (misuse of ``put``), it raises before changing anything.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Generator
from contextlib import closing
from typing import TYPE_CHECKING, Any

from mmu_notifier import sync
from mmu_notifier.errors import (
    InterruptedCallError,
    MisuseError,
    NoMemoryError,
    RefcountOverflowError,
)
from mmu_notifier.faults import REGISTER_ALLOC, REGISTER_MMAP_LOCK
from mmu_notifier.kmem import call_site, note_alloc, poison
from mmu_notifier.kmem import is_freed as is_freed  # deprecated here: use mmu_notifier.kmem (kept for one release)
from mmu_notifier.log import LOG
from mmu_notifier.range import RANGE_BLOCKABLE, Range

if TYPE_CHECKING:
    from mmu_notifier.interval import IntervalState
    from mmu_notifier.kernel import Kernel
    from mmu_notifier.mm import MM
    from mmu_notifier.pagetable import PTE
    from mmu_notifier.plugins import DriverRegistry, MMUNotifierOps
    from mmu_notifier.srcu import Srcu

__all__ = [
    "MMUNotifier",
    "MMUNotifierMM",
    "get",
    "get_locked",
    "put",
    "register",
    "register_locked",
    "synchronize",
    "unregister",
]

_EAGAIN = -errno.EAGAIN

#: Signature of :func:`clear_flush_young` and :func:`clear_young`.
YoungCallback = Callable[["MM", int, int], int]


class MMUNotifier:
    """One subscription of a driver on an mm (``struct mmu_notifier``).

    Drivers subclass it to embed their per-mm state, exactly as kernel drivers
    embed the struct, and return an instance from ``alloc_notifier``. The core
    owns the four fields below; a driver reads ``mm`` (stable while it holds a
    reference) and may read ``users``.

    After ``free_notifier`` ran, the object is poisoned: reading or writing any
    attribute raises :class:`UseAfterFreeError` naming where it was freed.
    """

    __slots__ = ("ops", "mm", "users", "linked", "unregistered", "__weakref__", "__dict__")

    def __init__(self) -> None:
        #: the owning driver's ops; set by registration (``None`` until then)
        self.ops: MMUNotifierOps = None  # type: ignore[assignment]
        self.mm: MM | None = None
        self.users = 0
        #: on its mm's list (the kernel's ``!hlist_unhashed``)
        self.linked = False
        #: ``unregister`` ran: the caller owns the memory again; a second unregister or a put is misuse
        self.unregistered = False
        note_alloc(self)  # KASAN's "Allocated by": the driver line that created the subscription

    def __repr__(self) -> str:
        name = self.ops.name if self.ops else "?"
        mm = self.mm.id if self.mm else None
        return f"<{type(self).__name__} driver={name} mm={mm} users={self.users} linked={self.linked}>"


#: the slot ``MMUNotifier.ops`` itself, read past the poison of a freed subscription (see :func:`_ops_of`)
_SUB_OPS: Any = MMUNotifier.__dict__["ops"]


def _ops_of(sub: MMUNotifier) -> MMUNotifierOps:
    """``sub.ops`` read as the model's own bookkeeping (a dispatch observer's counts), never a use after free.

    A subscription a buggy driver freed too early is a use after free when the
    *kernel* touches it (the walk's ``sub.linked`` and the callback report it);
    the counting that follows a walk is no access of the kernel's and must not
    report one of its own.
    """
    ops: MMUNotifierOps = _SUB_OPS.__get__(sub, MMUNotifier)
    return ops


class MMUNotifierMM:
    """The per-mm container (``struct mmu_notifier_mm``).

    ``subscriptions`` is a tuple that is replaced, never mutated: a walker
    reads it once and sees a consistent snapshot, as an RCU list walker does.
    It is ordered head first, so the most recent registration comes first.
    ``by_ops`` indexes the linked subscriptions per driver (in registration
    order) so that ``get`` does not walk the list as the kernel does.
    ``interval`` is the 5.5 interval-notifier state
    (:class:`~mmu_notifier.interval.IntervalState`), made by the first
    interval insert; ``has_itree`` is "it exists".

    Deliberate difference in cost, not behaviour: the kernel's
    ``hlist_add_head_rcu``/``hlist_del_init_rcu`` are O(1); so are
    :meth:`link` and :meth:`unlink` here. Membership is an insertion-ordered
    dict; the snapshot tuple is built on the first read after a change (a
    walk pays for it once, and it walks every element anyway), so
    registering N subscriptions costs O(N) in all, not O(N^2).
    """

    __slots__ = ("lock", "_members", "_version", "_snapshot", "by_ops", "interval", "_census")

    def __init__(self) -> None:
        self.lock = sync.SpinLock("mmu_notifier_mm.lock")
        #: linked subscriptions, oldest first (the list is this, newest first)
        self._members: dict[MMUNotifier, None] = {}
        #: bumped after every change of ``_members``; the snapshot is used only at its version
        self._version = 0
        self._snapshot: tuple[int, tuple[MMUNotifier, ...]] = (0, ())
        self.by_ops: dict[MMUNotifierOps, dict[MMUNotifier, None]] = {}
        self.interval: IntervalState | None = None
        #: per callback: (snapshot, registry generation, census) of the last :meth:`census`
        self._census: dict[str, tuple[tuple[MMUNotifier, ...], int, tuple[tuple[MMUNotifierOps, int], ...]]] = {}

    @property
    def has_itree(self) -> bool:
        """Interval mode is enabled on this mm (5.5's ``has_itree``; never cleared)."""
        return self.interval is not None

    @property
    def subscriptions(self) -> tuple[MMUNotifier, ...]:
        """The list as a walker sees it now: newest first, never changed once handed out.

        Walkers read without the lock (as RCU walkers do), on real threads too: a
        snapshot is cached with the version it was built at, and a writer changes
        the members *before* bumping the version, so a snapshot built while a
        change is under way is never taken for a later version's. The members are
        copied in one C call (``dict.copy``) before the copy is reversed: a walker
        sees the list either before or after a concurrent link or unlink, as an
        RCU reader does. Iterating the live dict into a tuple is not one step on
        OS threads: the tuple's allocation may run the garbage collector, whose
        finalizers may switch the GIL to the writer, and the iteration then
        raised "dictionary changed size during iteration" (seen on OS threads:
        the main job's background thread aging a page of a process that attached).
        """
        version = self._version
        cached = self._snapshot
        if cached[0] == version:
            return cached[1]
        snapshot = tuple(reversed(self._members.copy()))
        self._snapshot = (version, snapshot)
        return snapshot

    def link(self, sub: MMUNotifier) -> None:
        """Add at the head (``hlist_add_head_rcu``); caller holds ``lock``."""
        self._members[sub] = None
        self._version += 1
        self.by_ops.setdefault(sub.ops, {})[sub] = None
        sub.linked = True
        sub.ops.linked += 1

    def unlink(self, sub: MMUNotifier) -> bool:
        """Unlink if linked (``hlist_del_init_rcu``); caller holds ``lock``. True if it was."""
        if not sub.linked:
            return False
        sub.linked = False
        sub.ops.linked -= 1
        del self._members[sub]
        self._version += 1
        same = self.by_ops[sub.ops]
        del same[sub]
        if not same:
            del self.by_ops[sub.ops]
        return True

    def census(
        self, subs: tuple[MMUNotifier, ...], callback: str, generation: int
    ) -> tuple[tuple[MMUNotifierOps, int], ...]:
        """Per ops, how many of the snapshot ``subs`` have ``callback`` (a walk's calls, for a dispatch observer).

        No kernel counterpart: the accounting of :func:`_start_tallied` and :func:`_end_tallied`. Kept for
        one snapshot (the walk pays O(N) once per change of the list, as for the snapshot itself) and one
        ``generation`` of the registry's resolution (a field is ``None`` or not per resolution).
        """
        cached = self._census.get(callback)
        if cached is not None and cached[0] is subs and cached[1] == generation:
            return cached[2]
        found: dict[MMUNotifierOps, int] = {}
        for sub in subs:
            ops = _ops_of(sub)
            if getattr(ops, callback) is not None:
                found[ops] = found.get(ops, 0) + 1
        census = tuple(found.items())
        self._census[callback] = (subs, generation, census)
        return census

    def find(self, ops: MMUNotifierOps) -> MMUNotifier | None:
        """The first linked subscription with ``ops`` in list order; caller holds ``lock``."""
        same = self.by_ops.get(ops)
        return next(reversed(same)) if same else None


# -- registration --------------------------------------------------------------


def register_locked(sub: MMUNotifier, mm: MM, *, driver: object) -> None:
    """``__mmu_notifier_register``: link ``sub`` on ``mm``; the caller holds the mmap lock for write.

    Sets ``users`` to 1 and pins ``mm_count`` (dropped by ``unregister`` or by
    the free after the last ``put``). Creates the container on the first
    registration only.
    """
    if not mm.mmap_lock.is_write_locked_by_current():
        raise MisuseError("register_locked/get_locked needs the mmap lock held for write by the caller")
    if mm.mm_users.value <= 0:
        raise MisuseError(f"register on mm {mm.id} with mm_users == 0 (the kernel BUGs)")
    if sub.linked:
        raise MisuseError(f"{sub!r} is already registered")
    ops = mm.kernel.drivers.ops_of(driver)
    faults = mm.kernel.faults
    container = mm.mmu_notifier_mm
    new_container = container is None
    if new_container and faults.should_fail(REGISTER_ALLOC):
        raise NoMemoryError(f"register of {sub!r} on mm {mm.id}: allocation of the notifier container failed")
    if faults.should_fail(REGISTER_MMAP_LOCK):
        # the new container (if any) is dropped; the mm is left as it was
        raise InterruptedCallError(f"register of {sub!r} on mm {mm.id}: mm_take_all_locks saw a fatal signal")
    sub.ops = ops
    sub.mm = mm
    sub.users = 1
    sub.unregistered = False
    if container is None:
        container = MMUNotifierMM()
    mm.mmgrab()
    mm.mmu_notifier_mm = container
    with container.lock:
        container.link(sub)
    if LOG.on:
        LOG.event("notifier.register", mm=mm.id, driver=ops.name)


def register(sub: MMUNotifier, mm: MM, *, driver: object) -> None:
    """``mmu_notifier_register``: take the mmap lock for write and register."""
    mm.mmap_lock.down_write()
    try:
        register_locked(sub, mm, driver=driver)
    finally:
        mm.mmap_lock.up_write()


def get_locked(driver: object, mm: MM) -> MMUNotifier:
    """``mmu_notifier_get_locked``: the caller holds the mmap lock for write.

    Returns the live subscription of ``driver`` on ``mm`` with one more user,
    or calls the driver's ``alloc_notifier`` and registers the result with one
    user. An exception from ``alloc_notifier`` propagates with nothing
    registered. Raises :class:`RefcountOverflowError` (EOVERFLOW) at the users
    limit, without falling back to a second subscription.
    """
    if not mm.mmap_lock.is_write_locked_by_current():
        raise MisuseError("get_locked needs the mmap lock held for write by the caller")
    if mm.mm_users.value <= 0:
        # The kernel would call alloc_notifier and then BUG in __mmu_notifier_register; the model
        # refuses before the driver allocates anything, so the misuse changes nothing.
        raise MisuseError(f"get on mm {mm.id} with mm_users == 0 (the kernel BUGs)")
    kernel = mm.kernel
    ops = kernel.drivers.ops_of(driver)
    container = mm.mmu_notifier_mm
    if container is not None:
        with container.lock:
            sub = container.find(ops)
            if sub is not None:
                if sub.users >= kernel.users_limit:
                    raise RefcountOverflowError(f"{sub!r}: users at the limit {kernel.users_limit}")
                sub.users += 1
                if LOG.on:
                    LOG.event("notifier.get", mm=mm.id, driver=ops.name, users=sub.users)
                return sub
    alloc = ops.alloc_notifier
    if alloc is None:
        raise MisuseError(f"driver {ops.name!r} has no alloc_notifier hook, so get cannot create a subscription")
    sub = alloc(mm)
    if not isinstance(sub, MMUNotifier):
        raise MisuseError(f"driver {ops.name!r}: alloc_notifier returned {sub!r}, not an MMUNotifier")
    if LOG.on:
        LOG.event("notifier.alloc", mm=mm.id, driver=ops.name)
    try:
        register_locked(sub, mm, driver=driver)
    except BaseException:
        # Never published: free at once, no grace period needed.
        _free_now(sub, ops, call_site())
        raise
    return sub


def get(driver: object, mm: MM) -> MMUNotifier:
    """``mmu_notifier_get``: take the mmap lock for write and :func:`get_locked`."""
    mm.mmap_lock.down_write()
    try:
        return get_locked(driver, mm)
    finally:
        mm.mmap_lock.up_write()


def put(sub: MMUNotifier) -> None:
    """``mmu_notifier_put``: drop a user; the last one unlinks and defers the free.

    Never sleeps and never calls ``release``. After the last put, a grace
    period of the notifier SRCU passes, then ``free_notifier`` runs (in atomic
    context) and the mm pin taken at registration is dropped. Raises
    :class:`MisuseError` for a subscription never registered or with no users
    left (the kernel WARNs), and :class:`UseAfterFreeError` for a freed one.
    """
    mm = sub.mm
    if mm is None:
        raise MisuseError(f"put of {sub!r}, which was never registered")
    if sub.unregistered:
        raise MisuseError(f"put of {sub!r} after mmu_notifier_unregister (unregister and put do not mix)")
    ops = sub.ops
    container = mm.mmu_notifier_mm
    assert container is not None
    with container.lock:
        if sub.users == 0:
            raise MisuseError(f"put of {sub!r} with no users left (the kernel WARNs and ignores it)")
        if sub.users == 1 and ops.free_notifier is None:
            # mmu_notifier_put reads ops->free_notifier only when users reaches 0
            raise MisuseError(f"last put of {sub!r}, but driver {ops.name!r} has no free_notifier hook")
        sub.users -= 1
        users = sub.users
        if not users:
            container.unlink(sub)
            ops.pending_frees += 1
    if LOG.on:
        LOG.event("notifier.put", mm=mm.id, driver=ops.name, users=users)
    if users:
        return
    site = call_site()
    mm.kernel.srcu.call(lambda: _free_after_grace_period(sub, ops, mm, site))


def _free_now(sub: MMUNotifier, ops: MMUNotifierOps, site: str) -> None:
    free = ops.free_notifier
    if free is not None:
        free(sub)
    poison(sub, site, freed_by="free_notifier")
    if LOG.on:
        LOG.event("notifier.free", driver=ops.name, site=site)


def _free_after_grace_period(sub: MMUNotifier, ops: MMUNotifierOps, mm: MM, site: str) -> None:
    """The SRCU callback queued by the last put: free, then drop the mm pin."""
    try:
        _free_now(sub, ops, f"free_notifier after the grace period of put at {site}")
    finally:
        ops.pending_frees -= 1
    mm.mmdrop()


def unregister(sub: MMUNotifier, mm: MM) -> None:
    """``mmu_notifier_unregister``: release if still linked, unlink, wait, drop the pin.

    Calls ``release`` only when the subscription is still linked (mm teardown
    may have run it already), waits for a grace period so no callback on it is
    running or will run, and drops one ``mm_count``. Does not look at ``users``
    and does not call ``free_notifier``: the caller owns the memory afterwards.
    Must not be called from inside a callback (it would wait for itself).
    """
    if sub.mm is not mm:
        raise MisuseError(f"unregister of {sub!r} from mm {mm.id}, where it was never registered")
    if sub.unregistered:
        raise MisuseError(f"unregister of {sub!r} twice (its mm pin was dropped already)")
    sync.might_sleep("mmu_notifier_unregister")
    kernel = mm.kernel
    container = mm.mmu_notifier_mm
    assert container is not None
    ops = sub.ops
    if sub.linked:
        release = ops.release
        if release is not None:
            with kernel.srcu.read_section():
                release(sub, mm)
                if LOG.on:
                    LOG.event("notifier.release", mm=mm.id, driver=ops.name, by="unregister")
        with container.lock:
            container.unlink(sub)
    sub.unregistered = True
    kernel.srcu.synchronize()
    if LOG.on:
        LOG.event("notifier.unregister", mm=mm.id, driver=ops.name)
    mm.mmdrop()


def synchronize(kernel: Kernel | None = None) -> None:
    """``mmu_notifier_synchronize``: return only after every pending free has run.

    What a module calls on unload. The 5.4 code is a ``synchronize_srcu``; the
    model implements the documented contract ("all outstanding SRCU work queued
    by put has completed"), which is ``srcu_barrier``.
    """
    if kernel is None:
        from mmu_notifier.kernel import default_kernel

        kernel = default_kernel()
    kernel.srcu.barrier()
    if LOG.on:
        LOG.event("notifier.synchronize")


# -- teardown ------------------------------------------------------------------


def release(mm: MM) -> None:
    """``__mmu_notifier_release``: mm teardown, called by exit_mmap.

    With interval notifiers (5.5), first their teardown range
    (:meth:`mmu_notifier.interval.IntervalState.release`), then the list. Runs every
    linked subscription's ``release`` inside one SRCU read section,
    unlinks every subscription (users and mm pins untouched: the driver still
    owes its put or unregister), then waits for a grace period so no release
    started by a concurrent unregister is still running. (The kernel unlinks
    just before leaving the read section, the model just after: nothing can
    tell, since the grace period that follows covers both.)
    """
    container = mm.mmu_notifier_mm
    if container is None:
        return
    if container.interval is not None:
        container.interval.release(mm)
    for sub, release_fn in _each_with(mm, "release"):
        release_fn(sub, mm)
        if LOG.on:
            LOG.event("notifier.release", mm=mm.id, driver=sub.ops.name, by="exit")
    with container.lock:
        for sub in container.subscriptions:
            container.unlink(sub)
    mm.kernel.srcu.synchronize()


# -- invalidation dispatch -----------------------------------------------------


class _WalkSection:
    """One list walk: an SRCU read section, non-blocking as well for a non-blockable range.

    The kernel brackets each callback of a non-blockable range with
    ``non_block_start()/end()``; bracketing the whole walk is the same to the
    callbacks and keeps the per-subscription cost of dispatch low. Gives the
    backend's walk point (``None`` on real threads). A class rather than a
    generator context manager: every invalidation enters two of these.
    """

    __slots__ = ("srcu", "blockable", "index", "task")

    def __init__(self, srcu: Srcu, blockable: int | bool) -> None:
        self.srcu = srcu
        self.blockable = blockable

    def __enter__(self) -> Callable[[object], None] | None:
        self.index = self.srcu.read_lock()
        task = self.task = None if self.blockable else sync.current()
        if task is not None:
            task.non_block_depth += 1
        return sync.backend().walk_point

    def __exit__(self, *exc: object) -> None:
        task = self.task
        if task is not None:
            task.non_block_depth -= 1
        self.srcu.read_unlock(self.index)


def invalidate_range_start(range: Range) -> None:
    """``mmu_notifier_invalidate_range_start``: a blockable start; cannot fail."""
    container = range.mm.mmu_notifier_mm
    sync.might_sleep("mmu_notifier_invalidate_range_start")
    range.flags |= RANGE_BLOCKABLE
    if container is not None:
        _core_start(range, container)


def invalidate_range_start_nonblock(range: Range) -> int:
    """``mmu_notifier_invalidate_range_start_nonblock``: 0, or ``-EAGAIN`` if a driver refused.

    As in 5.4, every subscription is still offered the start after a refusal
    and none then receives an end; the caller must not call the end either.
    With ``kernel.end_after_failed_start`` (commit c2655835fd8c, mainline since
    v5.12) every list subscription that has an end callback receives it before
    this returns. A refusal by an interval notifier (5.5) unwinds the interval
    state and skips the list subscribers altogether. A list refusal after the
    interval part succeeded leaves that part counted as active, as in the
    kernel (nothing ends it).
    """
    container = range.mm.mmu_notifier_mm
    range.flags &= ~RANGE_BLOCKABLE
    if container is None:
        return 0
    return _core_start(range, container)


def _core_start(range: Range, container: MMUNotifierMM) -> int:
    """The core start (``__mmu_notifier_invalidate_range_start``): interval notifiers first, then the list.

    Unlike the kernel, the list walk runs (as an empty SRCU read section) even when the list is empty.
    """
    if container.interval is not None and not container.interval.invalidate_start(range):
        return _EAGAIN
    result = _start(range, container)
    if result and not range.flags & RANGE_BLOCKABLE and range.mm.kernel.end_after_failed_start:
        _end(range, container, only_end=True)
    return result


def _start(range: Range, container: MMUNotifierMM) -> int:
    """``mn_hlist_invalidate_range_start``: every list subscriber's start; the last refusal, or 0.

    With a dispatch observer registered (``kernel.drivers.observed``, see
    :meth:`mmu_notifier.plugins.DriverRegistry.add_plugin`) the walk is one of
    two variants that also count and isolate (:func:`_start_counted` on the
    deterministic backend, :func:`_start_tallied` on real threads); the choice
    is made once per walk, so the walk without an observer pays nothing for them.
    """
    mm = range.mm
    kernel = mm.kernel
    srcu = kernel.srcu
    blockable = range.flags & RANGE_BLOCKABLE
    if LOG.on:
        LOG.event("invalidate.start", mm=mm.id, kind=range.event.name, start=range.start, end=range.end,
                  blockable=bool(blockable))
    result = 0
    with _WalkSection(srcu, blockable) as walk_point:
        subs = container.subscriptions
        drivers = kernel.drivers
        if drivers.observed:
            if walk_point is None:
                return _start_tallied(range, container, subs, drivers)
            return _start_counted(range, subs, walk_point, drivers)
        for sub in subs:
            if not sub.linked:
                continue
            if walk_point is not None:
                walk_point(sub)
            start = sub.ops.invalidate_range_start
            if start is not None:
                ret = start(sub, range)
                if ret:
                    result = _start_failed(range, sub, ret)
    return result


def _start_counted(range: Range, subs: tuple[MMUNotifier, ...], walk_point: Callable[[object], None],
                   drivers: DriverRegistry) -> int:
    """:func:`_start`'s walk with an observer, on the deterministic backend: each call counted as it happens.

    Every subscription costs a scheduling point here anyway, so two counter
    increments are nothing; counting at once keeps every reader's view (the main
    job's progress witnesses) what a wrapper around each callback gave: a call
    counts in ``calls`` when it begins, in ``starts`` when it returns. A driver's
    exception is its fault (:meth:`~mmu_notifier.plugins.DriverRegistry.isolate`)
    and the walk goes on as if the start had returned 0.
    """
    event = int(range.event)
    result = 0
    for sub in subs:
        if not sub.linked:
            continue
        walk_point(sub)
        ops = sub.ops
        start = ops.invalidate_range_start
        if start is not None:
            counts = ops.counts
            counts.calls += 1
            try:
                ret = start(sub, range)
            except BaseException as error:
                if not drivers.isolate(ops, "invalidate_range_start", error):
                    raise
                ret = None
            counts.starts[event] += 1
            if ret:
                if ret == _EAGAIN:
                    counts.refusals += 1
                result = _start_failed(range, sub, ret)
    return result


def _start_tallied(range: Range, container: MMUNotifierMM, subs: tuple[MMUNotifier, ...],
                   drivers: DriverRegistry) -> int:
    """:func:`_start`'s walk with an observer, on real threads (no walk points): counted when the walk ends.

    The loop adds nothing per subscription but a ``try`` (free in Python 3.11
    while nothing raises): the calls are counted from the snapshot's census
    (:meth:`MMUNotifierMM.census`) when the walk ends, less the subscriptions it
    skipped as unlinked since the snapshot; a walk that an exception stops is
    counted up to where it stopped (:func:`_tally_stopped`). A driver's
    exception is its fault and the walk goes on, as in :func:`_start_counted`.
    """
    result = 0
    skipped: list[MMUNotifier] | None = None
    sub: MMUNotifier | None = None
    raised = refused = None
    try:
        for sub in subs:
            if not sub.linked:
                if skipped is None:
                    skipped = []
                skipped.append(sub)
                continue
            start = sub.ops.invalidate_range_start
            if start is not None:
                try:
                    ret = start(sub, range)
                except BaseException as error:
                    if not drivers.isolate(sub.ops, "invalidate_range_start", error):
                        raised = sub
                        raise
                    ret = None
                if ret:
                    refused = sub
                    if ret == _EAGAIN:
                        sub.ops.counts.refusals += 1
                    result = _start_failed(range, sub, ret)
    except BaseException:
        # the current subscription: its start raised (begun), or returned and the refusal's WARN raised
        current = (1, 0) if raised is sub else (1, 1) if refused is sub else (0, 0)
        _tally_stopped(subs, sub, skipped, ("invalidate_range_start",), int(range.event), current)
        raise
    event = int(range.event)
    for ops, calls in container.census(subs, "invalidate_range_start", drivers.generation):
        counts = ops.counts
        counts.calls += calls
        counts.starts[event] += calls
    if skipped is not None:
        for sub in skipped:
            ops = _ops_of(sub)
            if ops.invalidate_range_start is not None:
                ops.counts.calls -= 1
                ops.counts.starts[event] -= 1
    return result


def _tally_stopped(subs: tuple[MMUNotifier, ...], stop: MMUNotifier | None, skipped: list[MMUNotifier] | None,
                   callbacks: tuple[str, ...], event: int, current: tuple[int, int]) -> None:
    """Count a tallied walk that an exception stopped at ``stop``: every subscription before it that was not
    skipped, with each of ``callbacks`` it has; ``current`` is ``stop``'s own (calls begun, starts returned)."""
    passed = set(map(id, skipped or ()))
    start = callbacks[0] == "invalidate_range_start"
    for sub in subs:
        if sub is stop:
            break
        if id(sub) in passed:
            continue
        ops = _ops_of(sub)
        for callback in callbacks:
            if getattr(ops, callback) is not None:
                ops.counts.calls += 1
                if start:
                    ops.counts.starts[event] += 1
    if stop is not None and current != (0, 0):
        counts = _ops_of(stop).counts
        counts.calls += current[0]
        if start:
            counts.starts[event] += current[1]


def _start_failed(range: Range, sub: MMUNotifier, ret: int) -> int:
    """A start callback returned non-zero: WARN unless it is a legal -EAGAIN."""
    ops = sub.ops
    kernel = range.mm.kernel
    if range.blockable or ret != _EAGAIN:
        mode = "blockable" if range.blockable else "non-blockable"
        kernel.warn(f"driver {ops.name!r}: invalidate_range_start returned {ret} for a {mode} {range!r}")
    elif kernel.end_after_failed_start and ops.invalidate_range_end is not None:
        kernel.warn(f"driver {ops.name!r} refused a start but has an end callback (v5.12+ WARNs: c2655835fd8c)")
    if LOG.on:
        LOG.event("invalidate.refused", mm=range.mm.id, driver=ops.name, ret=ret)
    return ret


def invalidate_range_end(range: Range) -> None:
    """``mmu_notifier_invalidate_range_end``: ``invalidate_range`` then the end callback."""
    container = range.mm.mmu_notifier_mm
    if range.flags & RANGE_BLOCKABLE:
        sync.might_sleep("mmu_notifier_invalidate_range_end")
    if container is not None:
        _core_end(range, container, only_end=False)


def invalidate_range_only_end(range: Range) -> None:
    """``mmu_notifier_invalidate_range_only_end``: the caller already called ``invalidate_range``."""
    container = range.mm.mmu_notifier_mm
    if container is not None:
        _core_end(range, container, only_end=True)


def _core_end(range: Range, container: MMUNotifierMM, *, only_end: bool) -> None:
    """The core end (``__mmu_notifier_invalidate_range_end``): interval notifiers first, then the list."""
    if container.interval is not None:
        container.interval.invalidate_end()
    _end(range, container, only_end=only_end)


def _end(range: Range, container: MMUNotifierMM, *, only_end: bool) -> None:
    """``mn_hlist_invalidate_end``: ``invalidate_range`` and the end callback of every list subscriber.

    With a dispatch observer, :func:`_end_counted` or :func:`_end_tallied`, as for :func:`_start`.
    """
    mm = range.mm
    srcu = mm.kernel.srcu
    with _WalkSection(srcu, range.flags & RANGE_BLOCKABLE) as walk_point:
        subs = container.subscriptions
        drivers = mm.kernel.drivers
        if drivers.observed:
            if walk_point is None:
                _end_tallied(range, container, subs, drivers, only_end)
            else:
                _end_counted(range, subs, walk_point, drivers, only_end)
        else:
            for sub in subs:
                if not sub.linked:
                    continue
                if walk_point is not None:
                    walk_point(sub)
                ops = sub.ops
                if not only_end and ops.invalidate_range is not None:
                    ops.invalidate_range(sub, mm, range.start, range.end)
                end = ops.invalidate_range_end
                if end is not None:
                    end(sub, range)
    if LOG.on:
        LOG.event("invalidate.end", mm=mm.id, kind=range.event.name, start=range.start, end=range.end)


def _end_counted(range: Range, subs: tuple[MMUNotifier, ...], walk_point: Callable[[object], None],
                 drivers: DriverRegistry, only_end: bool) -> None:
    """:func:`_end`'s walk with an observer, on the deterministic backend (see :func:`_start_counted`)."""
    mm = range.mm
    for sub in subs:
        if not sub.linked:
            continue
        walk_point(sub)
        ops = sub.ops
        counts = ops.counts
        if not only_end and ops.invalidate_range is not None:
            counts.calls += 1
            try:
                ops.invalidate_range(sub, mm, range.start, range.end)
            except BaseException as error:
                if not drivers.isolate(ops, "invalidate_range", error):
                    raise
        end = ops.invalidate_range_end
        if end is not None:
            counts.calls += 1
            try:
                end(sub, range)
            except BaseException as error:
                if not drivers.isolate(ops, "invalidate_range_end", error):
                    raise


def _end_tallied(range: Range, container: MMUNotifierMM, subs: tuple[MMUNotifier, ...],
                 drivers: DriverRegistry, only_end: bool) -> None:
    """:func:`_end`'s walk with an observer, on real threads: counted when the walk ends (as :func:`_start_tallied`)."""
    mm = range.mm
    skipped: list[MMUNotifier] | None = None
    sub: MMUNotifier | None = None
    raised: str | None = None
    try:
        for sub in subs:
            if not sub.linked:
                if skipped is None:
                    skipped = []
                skipped.append(sub)
                continue
            ops = sub.ops
            if not only_end and ops.invalidate_range is not None:
                try:
                    ops.invalidate_range(sub, mm, range.start, range.end)
                except BaseException as error:
                    if not drivers.isolate(ops, "invalidate_range", error):
                        raised = "invalidate_range"
                        raise
            end = ops.invalidate_range_end
            if end is not None:
                try:
                    end(sub, range)
                except BaseException as error:
                    if not drivers.isolate(ops, "invalidate_range_end", error):
                        raised = "invalidate_range_end"
                        raise
    except BaseException:
        callbacks = ("invalidate_range_end",) if only_end else ("invalidate_range", "invalidate_range_end")
        begun = 0
        if raised is not None and sub is not None:
            # the raising call, and (for the end) the invalidate_range that returned before it
            ranged = not only_end and _ops_of(sub).invalidate_range is not None
            begun = 1 + (raised == "invalidate_range_end" and ranged)
        _tally_stopped(subs, sub, skipped, callbacks, 0, (begun, 0))
        raise
    generation = drivers.generation
    for callback in ("invalidate_range_end",) if only_end else ("invalidate_range", "invalidate_range_end"):
        for ops, calls in container.census(subs, callback, generation):
            ops.counts.calls += calls
        if skipped is not None:
            for sub in skipped:
                ops = _ops_of(sub)
                if getattr(ops, callback) is not None:
                    ops.counts.calls -= 1


def _each_with(mm: MM, callback: str) -> Generator[tuple[MMUNotifier, Any], None, None]:
    """Yield ``(sub, fn)`` for linked subscriptions that have ``callback``, inside an SRCU read section."""
    container = mm.mmu_notifier_mm
    if container is None:
        return
    with _WalkSection(mm.kernel.srcu, blockable=True) as walk_point:
        for sub in container.subscriptions:
            if not sub.linked:
                continue
            if walk_point is not None:
                walk_point(sub)
            fn = getattr(sub.ops, callback)
            if fn is not None:
                yield sub, fn


def invalidate_range(mm: MM, start: int, end: int) -> None:
    """``mmu_notifier_invalidate_range``: flush secondary TLBs for ``[start, end)``."""
    for sub, fn in _each_with(mm, "invalidate_range"):
        fn(sub, mm, start, end)


def clear_flush_young(mm: MM, start: int, end: int) -> int:
    """``mmu_notifier_clear_flush_young``: OR of every subscription's answer."""
    young = 0
    for sub, fn in _each_with(mm, "clear_flush_young"):
        young |= fn(sub, mm, start, end) or 0
    return young


def clear_young(mm: MM, start: int, end: int) -> int:
    """``mmu_notifier_clear_young``: OR of every subscription's answer, no flush needed."""
    young = 0
    for sub, fn in _each_with(mm, "clear_young"):
        young |= fn(sub, mm, start, end) or 0
    return young


def test_young(mm: MM, address: int) -> int:
    """``mmu_notifier_test_young``: the first non-zero answer in list order, else 0."""
    with closing(_each_with(mm, "test_young")) as subscriptions:
        for sub, fn in subscriptions:
            young = fn(sub, mm, address)
            if young:
                return int(young)
    return 0


def change_pte(mm: MM, address: int, pte: PTE) -> None:
    """``mmu_notifier_change_pte``: the CPU entry at ``address`` is about to become ``pte``."""
    for sub, fn in _each_with(mm, "change_pte"):
        fn(sub, mm, address, pte)
