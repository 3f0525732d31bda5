"""Interval notifiers (Linux 5.5 ``mmu_interval_notifier``): one interval tree per mm and a sequence count.

Models the interval half of ``mm/mmu_notifier.c`` as of 5.5: a driver inserts
an :class:`MMUIntervalNotifier` for a virtual range; the core keeps every one
of an mm in an interval tree on the mm's container and calls the driver's
``invalidate(subscription, range, cur_seq)`` hook only for ranges that
intersect it. Device page faults use the collision-retry scheme
``read_begin`` / fault / ``read_retry`` instead of a driver-private tree.

The container state (:class:`IntervalState`, hanging off the container as
``container.interval``; its presence is the kernel's ``has_itree``) is guarded
by the container's spinlock, as in the kernel:

* ``invalidate_seq`` starts at 2. It goes odd (``|= 1``) when a starting range
  hits a subscription, or when a subscription is inserted while any range is
  active; it goes back to even (``+= 1``) only at the end of the *last* active
  range. An odd value means "fully excluded": the tree must not change.
* ``active_invalidate_ranges`` counts every start whose end has not run,
  whether it hit a subscription or not.
* ``deferred`` is the deferred insert/remove list (an hlist: added at the
  head, walked from the head), applied by the last end.
* ``wq`` is the wait queue of ``read_begin`` and ``remove``.

Each subscription pins its mm with ``mmgrab`` (``mm_count``); ``remove``
drops it. Teardown (:meth:`IntervalState.release`, called by the core before
the list subscribers' release) sends one blockable ``RELEASE`` range over the whole
address space; subscriptions stay in the tree until the driver removes them.

Where the model deliberately differs from 5.5 (each documented at its place):

* :func:`interval_notifier_remove` waits for the sequence with the container
  lock held while it reads it (the 2022 fix "fix race in
  mmu_interval_notifier_remove()"); ``Kernel.interval_remove_unlocked_wait``
  restores 5.5's unlocked read, whose use after free the explorer finds.
* ``Kernel.interval_insert_checks_mm_users`` switches on the 2020 fix ("fix
  mmget() assert in __mmu_interval_notifier_insert"): insert WARNs and refuses
  with EINVAL once ``mm_users`` is zero; 5.5 checks ``mm_count`` and so
  silently accepts an insert after ``exit_mmap``.
* Misuse the kernel would not notice (inserting a subscription twice,
  removing one never inserted, a driver without an ``invalidate`` hook) is a
  :class:`~mmu_notifier.errors.MisuseError` raised before anything changes;
  ``insert`` validates its range before it enables interval mode (5.5 enables
  it first; the only visible difference is an empty interval teardown at exit).
* ``read_begin`` reads the subscription's sequence and then the mm's without
  the lock on the idle path and takes the lock only when they are equal. The
  answer is the kernel's: the mm's sequence leaves an odd value only at the
  last end of the epoch, so "not equal" read in that order is never stale
  (see :func:`interval_read_begin`).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from mmu_notifier import sync
from mmu_notifier.errors import InvalidArgumentError, MisuseError, RangeOverflowError
from mmu_notifier.itree import ULONG_MAX, IntervalTree
from mmu_notifier.log import LOG
from mmu_notifier.notifier import MMUNotifierMM
from mmu_notifier.range import RANGE_BLOCKABLE, Event, Range

if TYPE_CHECKING:
    from mmu_notifier.mm import MM
    from mmu_notifier.plugins import MMUNotifierOps

__all__ = [
    "IntervalState",
    "MMUIntervalNotifier",
    "interval_check_retry",
    "interval_notifier_insert",
    "interval_notifier_insert_locked",
    "interval_notifier_remove",
    "interval_read_begin",
    "interval_read_retry",
    "interval_set_seq",
]

_EAGAIN = -errno.EAGAIN


class MMUIntervalNotifier:
    """One interval subscription (``struct mmu_interval_notifier``).

    Drivers embed it, as kernel drivers embed the struct: subclass it (or use
    it as is) and pass it to :func:`interval_notifier_insert`. The core owns
    every field: ``start`` and ``last`` (inclusive) are the interval,
    ``invalidate_seq`` the subscription's last-seen sequence (always odd),
    ``in_tree`` the kernel's "rb node not empty" and ``deferred`` "on the
    deferred list". ``mm`` and ``ops`` are set by insert and kept after
    remove, as in the kernel.

    A driver frees the object after :func:`interval_notifier_remove`
    returned (``kfree``); from then on it is poisoned and every touch,
    including one by the core, is a use after free.
    """

    __slots__ = ("start", "last", "ops", "mm", "invalidate_seq", "in_tree", "deferred", "inserted", "state",
                 "__weakref__", "__dict__")

    def __init__(self) -> None:
        self.start = 0
        self.last = 0
        #: the owning driver's ops (``None`` until inserted)
        self.ops: MMUNotifierOps | None = None
        self.mm: MM | None = None
        self.invalidate_seq = 0
        self.in_tree = False
        self.deferred = False
        #: between a successful insert and the return of its remove (the model's own bookkeeping)
        self.inserted = False
        #: the mm's interval state, from the first insert on (``mm->mmu_notifier_mm`` in the kernel; cached here so
        #: the read side is one load, as the kernel's is)
        self.state: IntervalState | None = None

    def __repr__(self) -> str:
        name = self.ops.name if self.ops else "?"
        mm = self.mm.id if self.mm else None
        return (f"<{type(self).__name__} driver={name} mm={mm} [{self.start:#x}, {self.last:#x}] "
                f"seq={self.invalidate_seq} in_tree={self.in_tree}>")


class IntervalState:
    """The interval half of the per-mm container (5.5's ``struct mmu_notifier_mm`` fields) and its dispatch.

    Guarded by ``lock``, the container's spinlock. Exists from the first
    insert on (its presence is ``has_itree``) and is never removed while the
    mm lives. The core's start/end dispatchers and the mm teardown call
    :meth:`invalidate_start`, :meth:`invalidate_end` and :meth:`release`.
    """

    __slots__ = ("lock", "invalidate_seq", "active_invalidate_ranges", "itree", "deferred", "wq")

    def __init__(self, lock: sync.SpinLock) -> None:
        self.lock = lock
        self.invalidate_seq = 2
        self.active_invalidate_ranges = 0
        self.itree: IntervalTree[MMUIntervalNotifier] = IntervalTree("mmu_notifier_mm.itree")
        #: the deferred list, head first (``hlist_add_head`` / ``hlist_for_each_entry_safe``)
        self.deferred: list[MMUIntervalNotifier] = []
        self.wq = sync.WaitQueue("mmu_notifier_mm.wq")

    def __repr__(self) -> str:
        return (f"<IntervalState seq={self.invalidate_seq} active={self.active_invalidate_ranges} "
                f"tree={len(self.itree)} deferred={len(self.deferred)}>")

    def invalidate_start(self, range: Range) -> bool:
        """``mn_itree_invalidate``: count the range, and call ``invalidate`` on every subscription it hits.

        Returns False when a driver refused a non-blockable range: the count was
        already unwound (the core then returns -EAGAIN without calling the list
        subscribers). A refusal of a blockable range is a WARN and counts as
        done. The walk runs outside the lock: the tree cannot change while the
        sequence is odd.
        """
        start = range.start
        last = range.end - 1
        with self.lock:
            self.active_invalidate_ranges += 1
            hits = self.itree.iter_overlap(start, last)
            first = next(hits, None)
            if first is not None:
                self.invalidate_seq |= 1
            cur_seq = self.invalidate_seq
        if first is None:
            return True
        walk_point = sync.backend().walk_point
        sub: MMUIntervalNotifier | None = first
        while sub is not None:
            if walk_point is not None:
                walk_point(sub)
            ops = sub.ops
            assert ops is not None and ops.invalidate is not None
            if ops.invalidate(sub, range, cur_seq) is False:
                kernel = range.mm.kernel
                if range.flags & RANGE_BLOCKABLE:
                    kernel.warn(f"driver {ops.name!r}: interval invalidate refused the blockable {range!r}")
                else:
                    if LOG.on:
                        LOG.event("invalidate.refused", mm=range.mm.id, driver=ops.name, ret=_EAGAIN)
                    self.invalidate_end()
                    return False
            sub = next(hits, None)
        return True

    def invalidate_end(self) -> None:
        """``mn_itree_inv_end``: the last active range makes the sequence even and applies the deferred list.

        Scheduling points sit inside the locked section (after the sequence
        moved and after each deferred item) so the explorer can run a remover
        there: with 5.5's unlocked wait it returns and the driver frees while
        this still walks the list.
        """
        lock = self.lock
        lock.lock()
        try:
            self.active_invalidate_ranges -= 1
            if self.active_invalidate_ranges or not self.invalidate_seq & 1:
                return
            self.invalidate_seq += 1
            sync.yield_now()
            deferred = self.deferred
            while deferred:
                sub = deferred.pop(0)
                if sub.in_tree:  # a touch of the subscription: use after free if the driver freed it
                    self.itree.remove(sub)
                    sub.in_tree = False
                else:
                    self.itree.insert(sub)
                    sub.in_tree = True
                sub.deferred = False
                sync.yield_now()
        finally:
            lock.unlock()
        self.wq.wake_up_all()

    def release(self, mm: MM) -> None:
        """``mn_itree_release``: at exit, one blockable RELEASE range over the whole address space.

        Every subscription in the tree gets one ``invalidate`` (a refusal is a
        WARN); they stay in the tree until the driver removes them.
        """
        range = Range(mm, 0, ULONG_MAX, Event.RELEASE, None, RANGE_BLOCKABLE)
        self.invalidate_start(range)
        self.invalidate_end()


# -- enabling interval mode ------------------------------------------------------


def _state_of(mm: MM) -> IntervalState | None:
    container = mm.mmu_notifier_mm
    return None if container is None else container.interval


def _enable_locked(mm: MM) -> None:
    """``__mmu_notifier_register(NULL, mm)``: make the container if needed and set ``has_itree``.

    The caller holds the mmap lock for write. As the kernel, it takes no mm
    pin (each subscription pins on its own) and BUGs on an exited mm.
    """
    if not mm.mmap_lock.is_write_locked_by_current():
        raise MisuseError("enabling interval notifiers (register(NULL)) needs the mmap lock held for write")
    if mm.mm_users.value <= 0:
        raise MisuseError(f"interval notifier insert on mm {mm.id} with mm_users == 0: register(NULL) BUGs")
    container = mm.mmu_notifier_mm
    if container is None:
        container = MMUNotifierMM()
        mm.mmu_notifier_mm = container
    if container.interval is None:
        with container.lock:
            container.interval = IntervalState(container.lock)
        if LOG.on:
            LOG.event("interval.has_itree", mm=mm.id)


# -- insert and remove -----------------------------------------------------------


def _check_insert(sub: MMUIntervalNotifier, mm: MM, start: int, length: int, driver: object) -> MMUNotifierOps:
    """Every check insert makes before changing anything; returns the driver's ops."""
    if not isinstance(sub, MMUIntervalNotifier):
        raise MisuseError(f"interval_notifier_insert of {sub!r}, which is not an MMUIntervalNotifier")
    if sub.inserted:
        raise MisuseError(f"interval_notifier_insert of {sub!r}, which is already inserted")
    ops = mm.kernel.drivers.ops_of(driver)
    if ops.invalidate is None:
        raise MisuseError(f"driver {ops.name!r} has no invalidate hook, so it cannot insert an interval notifier")
    if type(start) is not int or type(length) is not int or start < 0 or length < 0 or start > ULONG_MAX:
        raise InvalidArgumentError(f"interval notifier of driver {ops.name!r}: bad range start={start!r} "
                                   f"length={length!r} (unsigned longs)")
    if length == 0 or start + length - 1 > ULONG_MAX:
        raise RangeOverflowError(f"interval notifier of driver {ops.name!r}: range {start:#x}+{length:#x} is empty "
                                 f"or wraps past the end of the address space")
    return ops


def _insert(sub: MMUIntervalNotifier, mm: MM, start: int, length: int, ops: MMUNotifierOps) -> None:
    """``__mmu_interval_notifier_insert``: the common part, interval mode already enabled."""
    kernel = mm.kernel
    if kernel.interval_insert_checks_mm_users:
        if mm.mm_users.value <= 0:
            kernel.warn(f"interval notifier insert on mm {mm.id} after exit_mmap (mm_users == 0)")
            raise InvalidArgumentError(f"interval notifier insert on mm {mm.id}, which has exited")
    elif mm.mm_count.value <= 0:
        kernel.warn(f"interval notifier insert on freed mm {mm.id} (mm_count == 0)")
        raise InvalidArgumentError(f"interval notifier insert on mm {mm.id}, which is freed")
    container = mm.mmu_notifier_mm
    assert container is not None
    state = container.interval
    assert state is not None
    sub.mm = mm
    sub.ops = ops
    sub.state = state
    sub.start = start
    sub.last = start + length - 1
    sub.in_tree = False
    mm.mmgrab()
    with container.lock:
        if state.active_invalidate_ranges:
            if state.invalidate_seq & 1:
                # fully excluded: the tree may not change; the last end inserts it
                sub.invalidate_seq = state.invalidate_seq
                sub.deferred = True
                state.deferred.insert(0, sub)
                how = "deferred"
            else:
                # partially excluded: an unknown range is being invalidated, so treat the new
                # interval as colliding with it: the mm goes odd, read_begin waits for the last end
                state.invalidate_seq |= 1
                sub.invalidate_seq = state.invalidate_seq
                state.itree.insert(sub)
                sub.in_tree = True
                how = "during an active range"
        else:
            if state.invalidate_seq & 1:
                kernel.warn(f"interval notifier insert on idle mm {mm.id} with an odd sequence")
            sub.invalidate_seq = state.invalidate_seq - 1
            state.itree.insert(sub)
            sub.in_tree = True
            how = "idle"
        sub.inserted = True
    if LOG.on:
        LOG.event("interval.insert", mm=mm.id, driver=ops.name, start=sub.start, last=sub.last, how=how)


def interval_notifier_insert(sub: MMUIntervalNotifier, mm: MM, start: int, length: int, driver: object) -> None:
    """``mmu_interval_notifier_insert``: watch ``[start, start + length)`` of ``mm`` for ``driver``.

    Enables interval mode on ``mm`` first if needed (taking the mmap lock for
    write, as ``mmu_notifier_register(NULL, mm)`` does), so the caller must
    not hold the mmap lock and must hold an ``mm_users`` reference. Pins
    ``mm_count`` until :func:`interval_notifier_remove`.

    On return the subscription may not be in the tree yet (inserted during an
    invalidation): establish device translations only through
    :func:`interval_read_begin` / :func:`interval_read_retry`.

    Raises :class:`~mmu_notifier.errors.RangeOverflowError` (EOVERFLOW) for a
    zero length or a range past ``ULONG_MAX``.
    """
    ops = _check_insert(sub, mm, start, length, driver)
    sync.might_sleep("mmu_interval_notifier_insert")
    if _state_of(mm) is None:
        mm.mmap_lock.down_write()
        try:
            _enable_locked(mm)
        finally:
            mm.mmap_lock.up_write()
    _insert(sub, mm, start, length, ops)


def interval_notifier_insert_locked(
    sub: MMUIntervalNotifier, mm: MM, start: int, length: int, driver: object
) -> None:
    """``mmu_interval_notifier_insert_locked``: :func:`interval_notifier_insert` with the mmap lock held for write."""
    if not mm.mmap_lock.is_write_locked_by_current():
        raise MisuseError("interval_notifier_insert_locked needs the mmap lock held for write by the caller")
    ops = _check_insert(sub, mm, start, length, driver)
    if _state_of(mm) is None:
        _enable_locked(mm)
    _insert(sub, mm, start, length, ops)


def interval_notifier_remove(sub: MMUIntervalNotifier) -> None:
    """``mmu_interval_notifier_remove``: stop watching; on return no ``invalidate`` runs on it or will.

    May sleep: while the mm's sequence is odd the removal is deferred to the
    last end and this waits until that end applied it (a pending insert is
    simply taken off the deferred list, without waiting). Drops the
    ``mm_count`` pin of insert. Must not be called from an ``invalidate``
    callback (it would wait for itself). The driver may free ``sub``
    afterwards.
    """
    mm = sub.mm
    if not sub.inserted or mm is None:
        raise MisuseError(f"interval_notifier_remove of {sub!r}, which is not inserted")
    sync.might_sleep("mmu_interval_notifier_remove")
    container = mm.mmu_notifier_mm
    assert container is not None
    state = container.interval
    assert state is not None
    kernel = mm.kernel
    seq = 0
    with container.lock:
        if state.invalidate_seq & 1:
            if not sub.in_tree:
                # still a pending insert: take it off the deferred list, nothing to wait for
                state.deferred.remove(sub)
                sub.deferred = False
            else:
                sub.deferred = True
                state.deferred.insert(0, sub)
                seq = state.invalidate_seq
        elif not sub.in_tree:
            kernel.warn(f"interval notifier remove of {sub!r}: not in the tree of idle mm {mm.id}")
        else:
            state.itree.remove(sub)
            sub.in_tree = False
        sub.inserted = False
    if seq:
        if kernel.interval_remove_unlocked_wait:
            # 5.5: READ_ONCE of the sequence, no lock: may return while the last end still walks
            # the deferred list (use after free once the driver frees; fixed in 2022)
            state.wq.wait_event(lambda: state.invalidate_seq != seq)
        else:
            # the fix: mmu_interval_seq_released() reads it under the lock, so a changed value
            # means the last end also finished applying the deferred list
            state.wq.wait_event_locked(lambda: state.invalidate_seq != seq, container.lock)
    if LOG.on:
        LOG.event("interval.remove", mm=mm.id, driver=sub.ops.name if sub.ops else "?", waited=bool(seq))
    mm.mmdrop()


# -- the reader side -------------------------------------------------------------


def interval_read_begin(sub: MMUIntervalNotifier) -> int:
    """``mmu_interval_read_begin``: the sequence to pass to :func:`interval_read_retry`.

    Waits (sleeps) while an invalidation that touched ``sub``, or an insert
    made during one, is in progress: until the mm's sequence moves on. Never
    loops: the returned value may already be doomed to retry. Must not be
    called holding a lock that the driver's ``invalidate`` takes.

    The kernel reads both sequences under the container lock. The model reads
    the subscription's first, then the mm's, without the lock, and takes the
    lock only when they look equal. That cannot answer "idle" wrongly: the
    subscription's value equals the mm's only while that (odd) epoch lasts,
    and the mm's sequence leaves an odd value only at the epoch's last end, so
    a different mm value read afterwards means the epoch is over. (This keeps
    the idle path as cheap as the kernel's uncontended spinlock.)
    """
    seq = sub.invalidate_seq
    state = sub.state
    # The two reads are separate steps: a scheduling point between them for the explorer (its
    # list-walk point depends on every other step); real threads need none, so they pay nothing.
    point = sync._backend.walk_point
    if point is not None:
        point(sub)
    if state is None or seq != state.invalidate_seq:
        if state is None:
            raise MisuseError(f"interval_read_begin of {sub!r}, which was never inserted")
        return seq
    container = sub.mm.mmu_notifier_mm  # type: ignore[union-attr]
    with container.lock:  # type: ignore[union-attr]
        seq = sub.invalidate_seq
        busy = seq == state.invalidate_seq
    sync.might_sleep("mmu_interval_read_begin")
    if busy:
        state.wq.wait_event(lambda: state.invalidate_seq != seq)
    return seq


def interval_read_retry(sub: MMUIntervalNotifier, seq: int) -> bool:
    """``mmu_interval_read_retry``: True if an invalidation called :func:`interval_set_seq` since ``seq`` was read.

    Call it under the driver lock that ``invalidate`` holds around
    ``set_seq``; then False means the translations collected since
    :func:`interval_read_begin` are still valid and may be installed before
    the lock is dropped.
    """
    return sub.invalidate_seq != seq


def interval_check_retry(sub: MMUIntervalNotifier, seq: int) -> bool:
    """``mmu_interval_check_retry``: the same test without the driver lock; only True is reliable."""
    sync.yield_now()  # READ_ONCE of a field another task writes
    return sub.invalidate_seq != seq


def interval_set_seq(sub: MMUIntervalNotifier, cur_seq: int) -> None:
    """``mmu_interval_set_seq``: from ``invalidate``, under the driver lock: record the invalidation's ``cur_seq``."""
    sub.invalidate_seq = cur_seq
