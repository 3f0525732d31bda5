"""The address space (``struct mm_struct``): VMAs, CPU page table, refcounts, mmap lock.

Models the parts of ``mm/mmap.c``, ``mm/memory.c``, ``mm/mremap.c``,
``mm/mprotect.c``, ``mm/madvise.c``, ``mm/rmap.c``, ``mm/ksm.c``,
``fs/proc/task_mmu.c`` and ``kernel/fork.c`` that produce mmu notifier
traffic. Every operation that changes or removes a CPU translation announces
it with the event type Linux 5.4 uses, in the kernel's order: start, change
the page table, end, and only then free the frames.

Locking, as in the kernel: VMA changes hold ``mmap_lock`` for write; faults
and ``madvise(DONTNEED)`` hold it for read; every page-table entry change holds
``page_table_lock`` (a spinlock, so ``change_pte`` and the young callbacks that
run under it are in atomic context). Reclaim, migration and KSM reach pages
through the reverse map in the kernel, without ``mmap_lock``; the model takes
it for read instead, which excludes the same VMA changes.

Refcounts: ``mm_users`` (``mmget``/``mmget_not_zero``/``mmput``; the last put
tears the address space down) and ``mm_count`` (``mmgrab``/``mmdrop``; all
users together hold one, and the last drop frees the ``mm_struct``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntFlag

from mmu_notifier import notifier, sync
from mmu_notifier.errors import BadAddressError, InvalidArgumentError, MisuseError, NoMemoryError
from mmu_notifier.kernel import Kernel, default_kernel
from mmu_notifier.log import LOG
from mmu_notifier.notifier import MMUNotifierMM
from mmu_notifier.pagetable import PTE, PageTable
from mmu_notifier.range import Event, Range

#: Top of the user address space (x86-64, 4-level paging).
TASK_SIZE = 1 << 47
#: pages per transparent huge page (``HPAGE_PMD_NR`` with 4 KiB pages: one PMD maps 2 MiB)
HPAGE_PMD_NR = 512
#: Where the model starts looking for room when mmap picks the address.
MMAP_BASE = 1 << 32


class Prot(IntFlag):
    """``PROT_*`` bits of a mapping."""

    NONE = 0
    READ = 1
    WRITE = 2
    EXEC = 4


RW = Prot.READ | Prot.WRITE


@dataclass(slots=True, eq=False)
class VMA:
    """A virtual memory area ``[start, end)`` (``struct vm_area_struct``)."""

    start: int
    end: int
    prot: Prot
    shared: bool = False

    @property
    def readable(self) -> bool:
        """VM_READ."""
        return bool(self.prot & Prot.READ)

    @property
    def writable(self) -> bool:
        """VM_WRITE."""
        return bool(self.prot & Prot.WRITE)

    def __repr__(self) -> str:
        kind = "shared" if self.shared else "private"
        return f"<VMA {self.start:#x}-{self.end:#x} {self.prot!r} {kind}>"


class MM:
    """One address space. ``MM(kernel)`` is a process's mm with ``mm_users == 1``."""

    def __init__(self, kernel: Kernel | None = None) -> None:
        self.kernel = kernel if kernel is not None else default_kernel()
        self.id = self.kernel.next_mm_id()
        self.page_size = self.kernel.page_size
        self.page_shift = self.page_size.bit_length() - 1
        self.vmas: list[VMA] = []
        self.page_table = PageTable()
        #: content tokens of swapped-out pages, by virtual page
        self.swap: dict[int, int] = {}
        self.mm_users = sync.Atomic(f"mm{self.id}.mm_users", 1)
        self.mm_count = sync.Atomic(f"mm{self.id}.mm_count", 1)
        self.mmap_lock = sync.RWSemaphore("mmap_lock")
        self.page_table_lock = sync.SpinLock("page_table_lock")
        #: the notifier container (``mm->mmu_notifier_mm``), made by the first registration
        self.mmu_notifier_mm: MMUNotifierMM | None = None
        self.freed = False
        if LOG.on:
            LOG.event("mm.create", mm=self.id)

    def __repr__(self) -> str:
        return f"<MM {self.id} users={self.mm_users.value} count={self.mm_count.value} vmas={len(self.vmas)}>"

    # -- reference counts -------------------------------------------------
    def mmget(self) -> None:
        """Take an ``mm_users`` reference; the caller must already hold one."""
        if self.mm_users.value <= 0:
            raise MisuseError(f"mmget on mm {self.id} with mm_users == 0: use mmget_not_zero")
        self.mm_users.inc()

    def mmget_not_zero(self) -> bool:
        """Take an ``mm_users`` reference unless the address space is already dying."""
        return self.mm_users.inc_not_zero()

    def mmput(self) -> None:
        """Drop an ``mm_users`` reference; the last one tears the address space down."""
        if self.mm_users.value <= 0:
            raise MisuseError(f"mmput on mm {self.id} with mm_users == 0")
        if self.mm_users.dec() == 0:
            self._exit_mmap()
            self.mmdrop()

    def exit(self) -> None:
        """The owning process exits: drop its ``mm_users`` reference."""
        self.mmput()

    def mmgrab(self) -> None:
        """Pin the ``mm_struct`` itself (``mm_count``)."""
        if self.mm_count.value <= 0:
            raise MisuseError(f"mmgrab on freed mm {self.id}")
        self.mm_count.inc()

    def mmdrop(self) -> None:
        """Unpin; the last drop frees the ``mm_struct`` and its notifier container."""
        if self.mm_count.value <= 0:
            raise MisuseError(f"mmdrop on mm {self.id} with mm_count == 0")
        if self.mm_count.dec():
            return
        container = self.mmu_notifier_mm
        if container is not None and container.subscriptions:
            raise MisuseError(f"mm {self.id} freed with subscriptions still linked (the kernel BUGs)")
        self.mmu_notifier_mm = None
        self.freed = True
        if LOG.on:
            LOG.event("mm.free", mm=self.id)

    @property
    def alive(self) -> bool:
        """True while ``mm_users > 0``."""
        return self.mm_users.value > 0

    # -- helpers ----------------------------------------------------------
    def _pages(self, addr: int, length: int) -> tuple[int, int]:
        """Validate ``addr``/``length``; return ``[start, end)`` with length rounded up to pages."""
        if addr % self.page_size:
            raise InvalidArgumentError(f"address {addr:#x} is not page aligned ({self.page_size})")
        if length <= 0:
            raise InvalidArgumentError(f"length must be positive, got {length}")
        end = addr + -(-length // self.page_size) * self.page_size
        if addr < 0 or end > TASK_SIZE:
            raise InvalidArgumentError(f"range {addr:#x}+{length:#x} is outside the address space")
        return addr, end

    def _check_alive(self) -> None:
        if self.mm_users.value <= 0:
            raise MisuseError(f"mm {self.id} has exited")

    @contextmanager
    def _write_locked(self) -> Iterator[None]:
        self._check_alive()
        self.mmap_lock.down_write()
        try:
            yield
        finally:
            self.mmap_lock.up_write()

    @contextmanager
    def _read_locked(self) -> Iterator[None]:
        self._check_alive()
        self.mmap_lock.down_read()
        try:
            yield
        finally:
            self.mmap_lock.up_read()

    @contextmanager
    def _invalidating(self, start: int, end: int, event: Event, vma: VMA | None = None) -> Iterator[list[int]]:
        """Announce ``[start, end)``; yields a list of frames to free after the end."""
        range = Range(self, start, end, event, vma)
        to_free: list[int] = []
        notifier.invalidate_range_start(range)
        try:
            yield to_free
        finally:
            notifier.invalidate_range_end(range)
            for pfn in to_free:
                self.kernel.memory.put(pfn)

    def find_vma(self, addr: int) -> VMA | None:
        """The VMA containing ``addr``, if any."""
        for vma in self.vmas:
            if vma.start <= addr < vma.end:
                return vma
        return None

    def _overlapping(self, start: int, end: int) -> list[VMA]:
        return [vma for vma in self.vmas if vma.start < end and start < vma.end]

    def _covering(self, start: int, end: int) -> list[VMA]:
        """VMAs covering ``[start, end)`` without a hole; :class:`NoMemoryError` otherwise."""
        found = self._overlapping(start, end)
        cursor = start
        for vma in found:
            if vma.start > cursor:
                break
            cursor = vma.end
        if cursor < end:
            raise NoMemoryError(f"range {start:#x}-{end:#x} of mm {self.id} is not fully mapped")
        return found

    def _split(self, addr: int) -> None:
        """Split the VMA that strictly contains ``addr`` at ``addr``."""
        for i, vma in enumerate(self.vmas):
            if vma.start < addr < vma.end:
                self.vmas.insert(i + 1, VMA(addr, vma.end, vma.prot, vma.shared))
                vma.end = addr
                return

    def _free_gap(self, length: int) -> int:
        cursor = MMAP_BASE
        for vma in self.vmas:
            if vma.end <= cursor:
                continue
            if vma.start - cursor >= length:
                break
            cursor = vma.end
        if cursor + length > TASK_SIZE:
            raise NoMemoryError(f"no room for {length:#x} bytes in mm {self.id}")
        return cursor

    def _insert_vma(self, vma: VMA) -> None:
        self.vmas.append(vma)
        self.vmas.sort(key=lambda v: v.start)

    def _vpns(self, start: int, end: int) -> list[int]:
        return self.page_table.in_range(start >> self.page_shift, end >> self.page_shift)

    def _zap(self, start: int, end: int, into: list[int]) -> None:
        """Clear every present entry in ``[start, end)``; collect the frames; caller holds the PTL."""
        for vpn in self._vpns(start, end):
            pte = self.page_table.clear(vpn)
            assert pte is not None
            into.append(pte.pfn)
        for vpn in [v for v in self.swap if start >> self.page_shift <= v < end >> self.page_shift]:
            del self.swap[vpn]

    # -- VMA operations ---------------------------------------------------
    def mmap(self, length: int, addr: int | None = None, prot: Prot = RW, *, shared: bool = False) -> int:
        """Map ``length`` bytes; the kernel picks the address unless ``addr`` is given.

        A given ``addr`` must not overlap an existing mapping (``MAP_FIXED_NOREPLACE``).
        """
        with self._write_locked():
            if addr is None:
                _, end = self._pages(0, length)
                start = self._free_gap(end)
                end += start
            else:
                start, end = self._pages(addr, length)
                if self._overlapping(start, end):
                    raise InvalidArgumentError(
                        f"range {start:#x}-{end:#x} overlaps an existing mapping of mm {self.id}"
                    )
            self._insert_vma(VMA(start, end, Prot(prot), shared))
            return start

    def munmap(self, addr: int, length: int) -> None:
        """Unmap ``[addr, addr+length)``; unmapped holes are fine, as in the kernel (UNMAP)."""
        start, end = self._pages(addr, length)
        with self._write_locked():
            self._munmap_locked(start, end)

    def _munmap_locked(self, start: int, end: int) -> None:
        doomed = self._overlapping(start, end)
        if not doomed:
            return
        span_start, span_end = max(start, doomed[0].start), min(end, doomed[-1].end)  # before splits move them
        self._split(start)
        self._split(end)
        self.vmas = [vma for vma in self.vmas if not (start <= vma.start and vma.end <= end)]
        with self._invalidating(span_start, span_end, Event.UNMAP, doomed[0]) as to_free, self.page_table_lock:
            self._zap(span_start, span_end, to_free)

    def mprotect(self, addr: int, length: int, prot: Prot) -> None:
        """Change protection of a fully mapped range (PROTECTION_VMA); write access is revoked at once.

        As ``mprotect_fixup`` then ``change_protection``: the VMA's new flags are set first, then
        the range is announced, so a driver reading the VMA (or ``range.update_to_read_only()``)
        during the invalidation sees the new protection.
        """
        start, end = self._pages(addr, length)
        with self._write_locked():
            self._covering(start, end)
            self._split(start)
            self._split(end)
            for vma in self._overlapping(start, end):
                vma.prot = Prot(prot)  # mprotect_fixup: vm_flags = newflags
                with self._invalidating(vma.start, vma.end, Event.PROTECTION_VMA, vma):
                    if not vma.writable:
                        with self.page_table_lock:
                            for vpn in self._vpns(vma.start, vma.end):
                                self.page_table.entries[vpn].writable = False

    def madvise_dontneed(self, addr: int, length: int, *, split_huge_page: bool = False) -> None:
        """``madvise(MADV_DONTNEED)``: drop the pages, keep the mapping (CLEAR).

        Models ``madvise_dontneed_single_vma`` -> ``zap_page_range``: one invalidation per VMA
        piece, under the mmap lock for read. With ``split_huge_page`` the piece starts inside a
        transparent huge page, so the zap splits it first, as ``zap_pmd_range`` ->
        ``__split_huge_pmd`` does: a second CLEAR start/end for the huge page's range runs
        *inside* the outer invalidation, in the same task, and closes with
        ``invalidate_range_only_end`` (the split clears the PMD with a flush that already covers
        the secondary TLBs). The model has no huge pages; the nested range is the
        ``HPAGE_PMD_NR`` pages block containing the piece's start, clipped to the VMA.
        """
        start, end = self._pages(addr, length)
        with self._read_locked():
            for vma in self._covering(start, end):
                piece_start, piece_end = max(start, vma.start), min(end, vma.end)
                with self._invalidating(piece_start, piece_end, Event.CLEAR, vma) as to_free:
                    if split_huge_page:
                        self._split_huge_pmd(vma, piece_start)
                    with self.page_table_lock:
                        self._zap(piece_start, piece_end, to_free)

    def _split_huge_pmd(self, vma: VMA, addr: int) -> None:
        """``__split_huge_pmd``: announce the huge page's range, split under the PMD lock, only_end."""
        huge = self.page_size * HPAGE_PMD_NR
        block = addr & ~(huge - 1)
        range = Range(self, max(block, vma.start), min(block + huge, vma.end), Event.CLEAR, vma)
        notifier.invalidate_range_start(range)
        try:
            with self.page_table_lock:
                pass  # the split itself changes no 4 KiB entry of the model
        finally:
            notifier.invalidate_range_only_end(range)

    def mremap(self, old_addr: int, old_length: int, new_length: int, *, may_move: bool = True) -> int:
        """Resize a mapping, moving it when it cannot grow in place (UNMAP); returns the new address."""
        old_start, old_end = self._pages(old_addr, old_length)
        _, new_size = self._pages(0, new_length)
        with self._write_locked():
            vma = self.find_vma(old_start)
            if vma is None or old_end > vma.end:
                raise BadAddressError(f"range {old_start:#x}-{old_end:#x} of mm {self.id} is not one mapping")
            if old_start + new_size <= old_end:
                if old_start + new_size < old_end:
                    self._munmap_locked(old_start + new_size, old_end)
                return old_start
            grow_end = old_start + new_size
            if old_end == vma.end and not self._overlapping(old_end, grow_end) and grow_end <= TASK_SIZE:
                vma.end = grow_end
                return old_start
            if not may_move:
                raise NoMemoryError(f"mapping at {old_start:#x} cannot grow in place and may not move")
            new_start = self._free_gap(new_size)
            self._insert_vma(VMA(new_start, new_start + new_size, vma.prot, vma.shared))
            with self._invalidating(old_start, old_end, Event.UNMAP, vma), self.page_table_lock:
                delta = (new_start - old_start) >> self.page_shift
                for vpn in self._vpns(old_start, old_end):
                    entry = self.page_table.clear(vpn)
                    assert entry is not None
                    self.page_table.set(vpn + delta, entry)
            self._munmap_locked(old_start, old_end)
            return new_start

    # -- faults -----------------------------------------------------------
    def fault(self, addr: int, write: bool = False) -> int:
        """Touch ``addr`` as the CPU would; returns the frame now mapped there."""
        with self._read_locked():
            return self.handle_mm_fault(addr, write)

    def handle_mm_fault(self, addr: int, write: bool = False) -> int:
        """Resolve a fault at ``addr``; the caller holds ``mmap_lock`` (either side).

        Populates absent pages, and breaks copy-on-write sharing on a write to
        a shared frame by copying it (CLEAR, with ``change_pte`` before the new
        entry is written). Raises :class:`BadAddressError` where the CPU would
        take SIGSEGV.
        """
        if not self.mmap_lock.is_locked_by_current():
            raise MisuseError("handle_mm_fault needs mmap_lock held by the caller")
        vma = self.find_vma(addr)
        if vma is None or not vma.readable or (write and not vma.writable):
            access = "write" if write else "read"
            raise BadAddressError(f"{access} fault at {addr:#x} of mm {self.id}: no mapping allows it")
        vpn = addr >> self.page_shift
        memory = self.kernel.memory
        while True:
            with self.page_table_lock:
                pte = self.page_table.lookup(vpn)
                if pte is None:
                    pte = PTE(memory.alloc(self.swap.pop(vpn, None)), writable=vma.writable)
                    self.page_table.set(vpn, pte)
                elif write and not pte.writable and memory.refcount[pte.pfn] == 1:
                    pte.writable = True  # wp_page_reuse: the only mapper may write in place
                if not write or pte.writable:
                    pte.young = True
                    if write:
                        pte.dirty = pte.soft_dirty = True
                    return pte.pfn
            copied = self._wp_page_copy(vpn, vma, pte)
            if copied is not None:
                return copied

    def _wp_page_copy(self, vpn: int, vma: VMA, orig: PTE) -> int | None:
        """Break COW: copy the shared frame and map the copy writable (``wp_page_copy``).

        Under the page-table lock the old entry is cleared and the secondary TLBs flushed
        (``ptep_clear_flush_notify``: ``invalidate_range`` runs *before* the new page is mapped),
        then ``change_pte`` and the new entry (``set_pte_at_notify``); the invalidation closes with
        ``invalidate_range_only_end``, as the flush was already sent. Returns None when the entry
        changed while the invalidation started (reclaim, migration, another fault): the caller
        retries the fault, as the kernel does when its ``pte_same`` check fails.
        """
        start = vpn << self.page_shift
        end = start + self.page_size
        memory = self.kernel.memory
        range = Range(self, start, end, Event.CLEAR, vma)
        old_pfn: int | None = None
        notifier.invalidate_range_start(range)
        try:
            with self.page_table_lock:
                if self.page_table.lookup(vpn) is not orig or orig.writable:
                    return None
                new = PTE(memory.alloc(memory.content[orig.pfn]), writable=True, dirty=True)
                self.page_table.clear(vpn)  # ptep_clear_flush_notify ...
                notifier.invalidate_range(self, start, end)  # ... flushes the secondary TLBs now
                notifier.change_pte(self, start, new)  # set_pte_at_notify
                self.page_table.set(vpn, new)
                old_pfn = orig.pfn
        finally:
            notifier.invalidate_range_only_end(range)
            if old_pfn is not None:
                memory.put(old_pfn)
        return new.pfn

    # -- reverse-map operations -------------------------------------------
    def reclaim(self, addr: int) -> bool:
        """Swap the page at ``addr`` out (CLEAR); False when nothing was mapped there."""
        vpn = addr >> self.page_shift
        with self._read_locked():
            if self.page_table.lookup(vpn) is None:
                return False
            page = vpn << self.page_shift
            with self._invalidating(page, page + self.page_size, Event.CLEAR, self.find_vma(page)) as to_free:
                with self.page_table_lock:
                    pte = self.page_table.clear(vpn)
                    if pte is not None:
                        self.swap[vpn] = self.kernel.memory.content[pte.pfn]
                        to_free.append(pte.pfn)
            return True

    def migrate(self, addr: int) -> int | None:
        """Move the page at ``addr`` to a new frame (CLEAR: 5.4 has no MIGRATE event); the new frame or None."""
        vpn = addr >> self.page_shift
        memory = self.kernel.memory
        with self._read_locked():
            if self.page_table.lookup(vpn) is None:
                return None
            page = vpn << self.page_shift
            with self._invalidating(page, page + self.page_size, Event.CLEAR, self.find_vma(page)) as to_free:
                with self.page_table_lock:
                    old = self.page_table.lookup(vpn)
                    if old is None:
                        return None
                    new = PTE(memory.alloc(memory.content[old.pfn]), old.writable, old.young, old.dirty, old.soft_dirty)
                    self.page_table.set(vpn, new)
                    to_free.append(old.pfn)
            return new.pfn

    def ksm_merge(self, addr: int, other: MM, other_addr: int) -> int:
        """Merge the page at ``addr`` into the page at ``other_addr`` of ``other`` (KSM); returns the shared frame.

        The stable page is write-protected first (CLEAR) and pinned, then this
        page is replaced inside a CLEAR range with ``change_pte`` called before
        the CPU entry changes, as ``replace_page`` does. A page that vanished
        meanwhile (reclaim, munmap) ends the merge with :class:`BadAddressError`.
        """
        kpfn = other._write_protect(other_addr)  # holds a reference on kpfn for us
        vpn = addr >> self.page_shift
        page = vpn << self.page_shift
        memory = self.kernel.memory
        try:
            with self._read_locked():
                with self._invalidating(page, page + self.page_size, Event.CLEAR, self.find_vma(page)) as to_free:
                    with self.page_table_lock:
                        old = self.page_table.lookup(vpn)
                        if old is None:
                            raise BadAddressError(f"no page at {addr:#x} of mm {self.id} to merge")
                        new = PTE(kpfn, writable=False, young=old.young, dirty=False, soft_dirty=old.soft_dirty)
                        notifier.change_pte(self, page, new)
                        self.page_table.set(vpn, new)
                        to_free.append(old.pfn)
        except BaseException:
            memory.put(kpfn)
            raise
        return kpfn

    def _write_protect(self, addr: int) -> int:
        """``write_protect_page``: make the page at ``addr`` read-only (CLEAR); returns its frame, pinned."""
        vpn = addr >> self.page_shift
        page = vpn << self.page_shift
        with self._read_locked():
            with self._invalidating(page, page + self.page_size, Event.CLEAR, self.find_vma(page)):
                with self.page_table_lock:
                    pte = self.page_table.lookup(vpn)
                    if pte is None:
                        raise BadAddressError(f"no page at {addr:#x} of mm {self.id} to merge into")
                    pte.writable = False
                    pte.dirty = False
                    self.kernel.memory.get(pte.pfn)
                    return pte.pfn

    def clear_flush_young(self, addr: int) -> bool:
        """``ptep_clear_flush_young_notify``: was the page accessed by the CPU or a device? Clears both."""
        return self._age(addr, notifier.clear_flush_young)

    def clear_young(self, addr: int) -> bool:
        """``ptep_clear_young_notify``: like :meth:`clear_flush_young`, secondary flush optional."""
        return self._age(addr, notifier.clear_young)

    def test_young(self, addr: int) -> bool:
        """Was the page accessed (CPU bit or any device)? Clears nothing."""
        vpn = addr >> self.page_shift
        with self.page_table_lock:
            pte = self.page_table.lookup(vpn)
            young = bool(pte and pte.young)
            return young | bool(notifier.test_young(self, vpn << self.page_shift))

    def _age(self, addr: int, secondary: notifier.YoungCallback) -> bool:
        vpn = addr >> self.page_shift
        page = vpn << self.page_shift
        with self.page_table_lock:
            pte = self.page_table.lookup(vpn)
            young = bool(pte and pte.young)
            if pte is not None:
                pte.young = False
            return young | bool(secondary(self, page, page + self.page_size))

    def fork(self) -> MM:
        """``dup_mmap``: a child mm sharing every frame; the parent's private writable pages are
        write-protected for copy-on-write inside a PROTECTION_PAGE range per VMA.

        Unlike the kernel, which leaves shared mappings' entries to be faulted in
        again by the child, the model copies every present entry (no notifier
        traffic either way)."""
        memory = self.kernel.memory
        with self._write_locked():
            child = MM(self.kernel)
            for vma in self.vmas:
                child.vmas.append(VMA(vma.start, vma.end, vma.prot, vma.shared))
                cow = not vma.shared and vma.writable
                with self._cow_announced(vma, cow), self.page_table_lock:
                    for vpn in self._vpns(vma.start, vma.end):
                        pte = self.page_table.entries[vpn]
                        if cow:
                            pte.writable = False
                        memory.get(pte.pfn)
                        child.page_table.set(vpn, PTE(pte.pfn, pte.writable, pte.young, pte.dirty, pte.soft_dirty))
            child.swap.update(self.swap)
            return child

    @contextmanager
    def _cow_announced(self, vma: VMA, cow: bool) -> Iterator[None]:
        if not cow:
            yield
            return
        with self._invalidating(vma.start, vma.end, Event.PROTECTION_PAGE, vma):
            yield

    def clear_soft_dirty(self) -> None:
        """``echo 4 > /proc/PID/clear_refs``: reset soft-dirty bits and write-protect (SOFT_DIRTY)."""
        with self._read_locked(), self._invalidating(0, TASK_SIZE, Event.SOFT_DIRTY), self.page_table_lock:
            for pte in self.page_table.entries.values():
                pte.soft_dirty = False
                pte.writable = False

    def oom_reap(self) -> bool:
        """``__oom_reap_task_mm``: unmap private memory with non-blockable invalidations.

        A VMA whose start a driver refused is skipped (and gets no end). True
        when everything was reaped, False if the mmap lock was busy or a VMA
        was skipped.
        """
        if not self.mmap_lock.down_read_trylock():
            return False
        reaped = True
        try:
            for vma in list(self.vmas):
                if vma.shared:
                    continue
                range = Range(self, vma.start, vma.end, Event.UNMAP, vma)
                if notifier.invalidate_range_start_nonblock(range):
                    reaped = False
                    continue
                to_free: list[int] = []
                with self.page_table_lock:
                    self._zap(vma.start, vma.end, to_free)
                notifier.invalidate_range_end(range)
                for pfn in to_free:
                    self.kernel.memory.put(pfn)
        finally:
            self.mmap_lock.up_read()
        return reaped

    # -- teardown ---------------------------------------------------------
    def _exit_mmap(self) -> None:
        """``exit_mmap``: notifier release first, then unmap everything."""
        if LOG.on:
            LOG.event("mm.exit", mm=self.id)
        notifier.release(self)
        with self._invalidating(0, TASK_SIZE, Event.UNMAP) as to_free, self.page_table_lock:
            self._zap(0, TASK_SIZE, to_free)
        self.vmas = []
