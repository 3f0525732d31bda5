"""A model device that mirrors a process address space through HMM, like nouveau's SVM in 5.4.

One :class:`DeviceMirror` is nouveau's ``nouveau_svmm``: a device page table
(virtual page -> frame, writable or not) guarded by the driver's ``update``
mutex (``svmm->mutex``), bound to one mm as an HMM mirror.

* ``sync_cpu_device_pagetables`` (the invalidation) takes ``update`` and
  drops every device translation in the range before the CPU changes it. For
  a non-blockable range it refuses (``-EAGAIN``) as nouveau did, or, with
  ``refuse_nonblock = "overlapping"``, only when it cannot take ``update``
  without sleeping or when the device maps something there.
* :meth:`DeviceMirror.fault` services a device page fault with the retry loop
  of ``Documentation/vm/hmm.rst`` (5.4): register a range, wait until it is
  valid, then loop { mmap lock for read; ``hmm_range_fault``, and on EBUSY
  drop the lock, wait until valid and retry; take ``update``; if the range
  is no longer valid drop both and retry; program the device; drop both };
  unregister the range.

``collision_check = "range_valid"`` runs that loop verbatim. It is not
enough: an invalidation that starts *and ends* between the walk and the
check leaves the range valid again, and the device maps a frame the CPU
already dropped (the bug the 5.5 commit "mm/hmm: allow hmm_range to be used
with a mmu_interval_notifier or hmm_mirror" describes). The default
``"sequence"`` also samples a device invalidation count (bumped under
``update`` by every accepted invalidation) before the walk and requires it
unchanged under ``update``, which makes the device coherent under any
interleaving.

``scheme = "5.5"``: the same device on 5.5's interval notifiers
(:mod:`mmu_notifier_hmm.interval`): :meth:`DeviceMirror.fault` runs the
``read_begin``/``hmm_range_fault``/``read_retry`` loop under a temporary
interval notifier; ``collision_check`` is not used.
"""

from __future__ import annotations

import errno

from mmu_notifier import MM, BusyError, Range, interval_notifier_insert, interval_notifier_remove, sync
from mmu_notifier_hmm.config import HmmConfig
from mmu_notifier_hmm.interval import HmmIntervalNotifier
from mmu_notifier_hmm.interval import fault as interval_fault
from mmu_notifier_hmm.mirror import HmmMirror, loaded_driver, mirror_register, mirror_unregister
from mmu_notifier_hmm.range import (
    HmmPfn,
    HmmPfnFlag,
    HmmRange,
    range_fault,
    range_register,
    range_unregister,
    range_valid,
    range_wait_until_valid,
)

EAGAIN = -errno.EAGAIN


class DeviceMirror(HmmMirror):
    """A device (one ``nouveau_svmm``) mirroring ``mm``; ``update`` guards ``page_table`` and ``invalidate_seq``."""

    def __init__(self, mm: MM, config: HmmConfig) -> None:
        super().__init__()
        self.mm = mm
        self.config = config
        self.update = sync.Mutex("device->update")
        #: virtual page number -> translation, oldest first (a full table evicts its oldest entry)
        self.page_table: dict[int, HmmPfn] = {}
        #: accepted invalidations so far (used by the ``"sequence"`` collision check)
        self.invalidate_seq = 0
        #: (5.5) long-lived interval notifiers of :meth:`track`
        self.tracked: list[HmmIntervalNotifier] = []
        #: (5.5) fault passes that collided with an invalidation and restarted
        self.retries = 0

    def __repr__(self) -> str:
        return f"<DeviceMirror mm={self.mm.id} entries={len(self.page_table)}>"

    # -- binding (nouveau_svmm_init / nouveau_svmm_fini) ---------------------
    def bind(self) -> None:
        """Start mirroring: take the mmap lock for write and register the mirror (the SVM-init ioctl)."""
        self.mm.mmap_lock.down_write()
        try:
            mirror_register(self, self.mm)
        finally:
            self.mm.mmap_lock.up_write()

    def unbind(self) -> None:
        """Stop mirroring: drop every translation, then unregister (nothing may survive the put)."""
        with self.update:
            self.page_table.clear()
        while self.tracked:
            interval_notifier_remove(self.tracked.pop())
        mirror_unregister(self)

    def track(self, start: int, end: int) -> HmmIntervalNotifier:
        """(5.5) Keep an interval notifier over ``[start, end)`` until :meth:`unbind`; faults inside it use it.

        A model addition (nouveau only inserts temporary notifiers): it is
        what the conformance kit's ``map_range`` asks an interval driver for.
        """
        sub = HmmIntervalNotifier(self)
        interval_notifier_insert(sub, self.mm, start, end - start, loaded_driver(self.mm))
        self.tracked.append(sub)
        return sub

    def tracking(self, start: int, end: int) -> HmmIntervalNotifier | None:
        """(5.5) A tracked notifier covering ``[start, end)``, if any."""
        for sub in self.tracked:
            if sub.start <= start and end - 1 <= sub.last:
                return sub
        return None

    # -- mirror ops ----------------------------------------------------------
    def sync_cpu_device_pagetables(self, range: Range) -> int:
        """Drop the device's translations in ``range``; refuse non-blockable ranges per the config."""
        if not range.blockable:
            return self._sync_nonblock(range)
        with self.update:
            self._zap(range.start, range.end)
            self.invalidate_seq += 1
        return 0

    def _sync_nonblock(self, range: Range) -> int:
        """Without sleeping: refuse unless ``update`` is free and nothing is mapped in ``range``."""
        if self.config.refuse_nonblock == "all" or not self.update.trylock():
            return EAGAIN
        try:
            if self._mapped_in(range.start, range.end):
                return EAGAIN  # a real device's TLB flush would have to wait for the hardware
            self.invalidate_seq += 1
            return 0
        finally:
            self.update.unlock()

    def zap_trylock(self, start: int, end: int) -> bool:
        """(5.5, non-blockable) Drop the translations in ``[start, end)`` if ``update`` is free; False if not."""
        if not self.update.trylock():
            return False
        try:
            self._zap(start, end)
            self.invalidate_seq += 1
        finally:
            self.update.unlock()
        return True

    def release(self) -> None:
        """The mm is going away: drop every translation."""
        with self.update:
            self.page_table.clear()
            self.invalidate_seq += 1

    # -- the device side -----------------------------------------------------
    def fault(self, start: int, end: int, write: bool = False) -> None:
        """Service a device fault on ``[start, end)`` with the documented retry loop (see the module doc).

        Raises the errors of ``hmm_range_register``/``hmm_range_fault``
        (EFAULT, EPERM, EINVAL) and :class:`BusyError` when the range stayed
        invalid for the whole fault timeout (nouveau then leaves the fault to
        be replayed later).
        """
        if self.config.scheme == "5.5":
            interval_fault(self, loaded_driver(self.mm), start, end, write)
            return
        flags = HmmPfnFlag.VALID | (HmmPfnFlag.WRITE if write else HmmPfnFlag.NONE)
        range = HmmRange(start, end, flags)
        timeout = self.config.fault_timeout_ms
        sequence = self.config.collision_check == "sequence"
        range_register(range, self)
        try:
            range_wait_until_valid(range, timeout)  # the result is ignored: range_fault tells
            while True:
                seq = self._sample_seq() if sequence else None
                if self._fault_once(range, seq):
                    return
                if not range_wait_until_valid(range, timeout):
                    raise BusyError(f"device fault {start:#x}-{end:#x}: range still invalid after {timeout} ms")
        finally:
            range_unregister(range)

    def _sample_seq(self) -> int:
        with self.update:
            return self.invalidate_seq

    def _fault_once(self, range: HmmRange, seq: int | None) -> bool:
        """One pass of the loop under the mmap read lock; True once the device is programmed."""
        self.mm.mmap_lock.down_read()
        try:
            try:
                range_fault(range)
            except BusyError:
                return False
            with self.update:
                if not range_valid(range) or (seq is not None and seq != self.invalidate_seq):
                    return False
                self.program(range)
            return True
        finally:
            self.mm.mmap_lock.up_read()

    def access(self, address: int, write: bool = False) -> int | None:
        """A device access: the frame the device translates ``address`` to, faulting it in if needed.

        None when the fault timed out or the translation was invalidated again
        before the access could use it (the device retries later).
        """
        vpn = address >> self.mm.page_shift
        found = self.lookup(vpn, write)
        if found is not None:
            return found
        page = vpn << self.mm.page_shift
        try:
            self.fault(page, page + self.mm.page_size, write)
        except BusyError:
            return None
        return self.lookup(vpn, write)

    def lookup(self, vpn: int, write: bool = False) -> int | None:
        """The frame the device translates ``vpn`` to (writable if ``write``), or None."""
        with self.update:
            entry = self.page_table.get(vpn)
        if entry is None or (write and not entry.write):
            return None
        return entry.pfn

    def translations(self) -> dict[int, int]:
        """Every translation the device holds: virtual page number -> frame."""
        with self.update:
            return {vpn: entry.pfn for vpn, entry in self.page_table.items()}

    def incoherent(self) -> list[str]:
        """Device translations the CPU page table does not back; call when no invalidation is in flight.

        A translation is coherent when the CPU maps the same frame at that
        page and, if the device may write, maps it writable.
        """
        problems = []
        for vpn, entry in self.page_table.items():
            cpu = self.mm.page_table.lookup(vpn)
            if cpu is None or cpu.pfn != entry.pfn or (entry.write and not cpu.writable):
                problems.append(f"device maps page {vpn:#x} -> frame {entry.pfn} (write={entry.write}); CPU has {cpu}")
        return problems

    # -- the device page table (caller holds ``update``) -------------------
    def program(self, range: HmmRange) -> None:
        """Write the filled entries of ``range`` into the device page table (full table: evict the oldest)."""
        first = range.start >> self.mm.page_shift
        for i, entry in enumerate(range.pfns):
            if entry is None:
                continue
            vpn = first + i
            self.page_table.pop(vpn, None)
            while len(self.page_table) >= self.config.device_pages:
                del self.page_table[next(iter(self.page_table))]
            self.page_table[vpn] = entry

    def _zap(self, start: int, end: int) -> None:
        shift = self.mm.page_shift
        for vpn in [v for v in self.page_table if start >> shift <= v < end >> shift]:
            del self.page_table[vpn]

    def _mapped_in(self, start: int, end: int) -> bool:
        shift = self.mm.page_shift
        return any(start >> shift <= v < end >> shift for v in self.page_table)
