"""A hypothesis state machine over everything a process and a device can do, checking every invariant after every step.

Rules: new process, mmap, munmap, mprotect, madvise(DONTNEED), CPU fault,
reclaim, migrate, fork, exit, OOM reaper, attach, detach, map_range,
device access, synchronize. After each step the
:class:`~mmu_notifier.invariants.Monitor` checks registration, pairing,
callbacks, coherence and the kernel log; after ``synchronize`` also frees
and leaks; at the end everything is detached, unloaded and checked once more.
Examples are few and short by default (``--mmu-examples``, ``--mmu-steps``)
and derandomized, so a run is repeatable and fast.
"""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from mmu_notifier import exerciser as contract
from mmu_notifier import synchronize
from mmu_notifier.conformance.harness import DriverUnderTest, World
from mmu_notifier.conformance.plugin import KitOptions
from mmu_notifier.errors import KernelError
from mmu_notifier.exerciser import Handle
from mmu_notifier.mm import MM, RW, Prot
from mmu_notifier.notifier import MMUNotifier

MAX_MMS = 3
MAX_HANDLES = 4
MAX_VMAS = 4


class ConformanceMachine(RuleBasedStateMachine):
    """The driver under test, driven through its exerciser by random sequences of process and device events."""

    dut: DriverUnderTest

    def __init__(self) -> None:
        super().__init__()
        self.world: World = self.dut.world(frames=512)
        self.mms: list[MM] = []
        #: the subscription each mm's attaches last held (a fresh one is due after the last detach)
        self.last_sub: dict[int, MMUNotifier | None] = {}

    # -- helpers ------------------------------------------------------------------
    def alive(self) -> list[MM]:
        return [mm for mm in self.mms if mm.alive]

    def handles(self) -> list[Handle]:
        return self.world.held()

    def with_vmas(self) -> list[MM]:
        return [mm for mm in self.alive() if mm.vmas]

    def with_pages(self) -> list[MM]:
        return [mm for mm in self.alive() if mm.page_table.entries]

    def span(self, data: st.DataObject, mm: MM) -> tuple[int, int]:
        vma = data.draw(st.sampled_from(mm.vmas), label="vma")
        pages = (vma.end - vma.start) >> mm.page_shift
        first = data.draw(st.integers(0, pages - 1), label="first page")
        count = data.draw(st.integers(1, pages - first), label="pages")
        start = vma.start + (first << mm.page_shift)
        return start, start + (count << mm.page_shift)

    def page(self, data: st.DataObject, mm: MM) -> int:
        vpn = data.draw(st.sampled_from(sorted(mm.page_table.entries)), label="page")
        return int(vpn << mm.page_shift)

    # -- processes ------------------------------------------------------------------
    @initialize(pages=st.integers(1, 4), write=st.booleans())
    def first_process(self, pages: int, write: bool) -> None:
        """Start where the interesting states are: a process whose device translates part of its memory."""
        world = self.world
        mm = world.new_mm()
        self.mms.append(mm)
        handle = world.attach(mm)
        self.last_sub[mm.id] = handle.subscription
        start, _ = world.region(mm, 4, handle=handle)
        world.touch(handle, start, start + pages * world.page, write)

    @precondition(lambda self: len(self.alive()) < MAX_MMS)
    @rule()
    def new_process(self) -> None:
        self.mms.append(self.world.new_mm())

    @precondition(lambda self: any(len(mm.vmas) < MAX_VMAS for mm in self.alive()))
    @rule(data=st.data(), pages=st.integers(1, 4), shared=st.booleans())
    def mmap(self, data: st.DataObject, pages: int, shared: bool) -> None:
        mm = data.draw(st.sampled_from([mm for mm in self.alive() if len(mm.vmas) < MAX_VMAS]), label="mm")
        mm.mmap(pages * mm.page_size, shared=shared)

    @precondition(lambda self: self.with_vmas())
    @rule(data=st.data())
    def munmap(self, data: st.DataObject) -> None:
        mm = data.draw(st.sampled_from(self.with_vmas()), label="mm")
        start, end = self.span(data, mm)
        mm.munmap(start, end - start)

    @precondition(lambda self: self.with_vmas())
    @rule(data=st.data(), prot=st.sampled_from([Prot.READ, RW, Prot.NONE]))
    def mprotect(self, data: st.DataObject, prot: Prot) -> None:
        mm = data.draw(st.sampled_from(self.with_vmas()), label="mm")
        start, end = self.span(data, mm)
        mm.mprotect(start, end - start, prot)

    @precondition(lambda self: self.with_vmas())
    @rule(data=st.data())
    def madvise_dontneed(self, data: st.DataObject) -> None:
        mm = data.draw(st.sampled_from(self.with_vmas()), label="mm")
        start, end = self.span(data, mm)
        mm.madvise_dontneed(start, end - start)

    @precondition(lambda self: self.with_vmas())
    @rule(data=st.data(), write=st.booleans())
    def cpu_fault(self, data: st.DataObject, write: bool) -> None:
        mm = data.draw(st.sampled_from(self.with_vmas()), label="mm")
        start, _ = self.span(data, mm)
        with contextlib.suppress(KernelError):  # SIGSEGV: the protection forbids it
            mm.fault(start, write)

    @precondition(lambda self: self.with_pages())
    @rule(data=st.data(), migrate=st.booleans())
    def reclaim_or_migrate(self, data: st.DataObject, migrate: bool) -> None:
        mm = data.draw(st.sampled_from(self.with_pages()), label="mm")
        addr = self.page(data, mm)
        if migrate:
            mm.migrate(addr)
        else:
            mm.reclaim(addr)

    @precondition(lambda self: self.alive() and len(self.alive()) < MAX_MMS)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        mm = data.draw(st.sampled_from(self.alive()), label="mm")
        child = mm.fork()
        self.world.monitor.track_mm(child)
        self.mms.append(child)

    @precondition(lambda self: self.alive())
    @rule(data=st.data())
    def exit(self, data: st.DataObject) -> None:
        mm = data.draw(st.sampled_from(self.alive()), label="mm")
        mm.exit()

    @precondition(lambda self: self.with_vmas())
    @rule(data=st.data())
    def oom_reap(self, data: st.DataObject) -> None:
        mm = data.draw(st.sampled_from(self.with_vmas()), label="mm")
        mm.oom_reap()

    # -- the device -----------------------------------------------------------------
    @precondition(lambda self: self.alive() and len(self.handles()) < MAX_HANDLES)
    @rule(data=st.data())
    def attach(self, data: st.DataObject) -> None:
        mm = data.draw(st.sampled_from(self.alive()), label="mm")
        before = self.world.held(mm)
        handle = self.world.attach(mm)
        last = self.last_sub.get(mm.id)
        by_exit = contract.DETACH_BY_EXIT in self.world.caps
        if not before and last is not None and not by_exit:
            assert handle.subscription is not last, (
                f"the attach after the last detach on mm {mm.id} got the old subscription {last!r} back: get must "
                f"allocate a fresh one"
            )
        self.last_sub[mm.id] = handle.subscription

    @precondition(lambda self: self.handles())
    @rule(data=st.data())
    def detach(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from(self.handles()), label="handle")
        self.world.detach(handle)

    @precondition(lambda self: any(h.mm.alive and h.mm.vmas for h in self.handles()))
    @rule(data=st.data())
    def map_range(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from([h for h in self.handles() if h.mm.alive and h.mm.vmas]), label="handle")
        start, end = self.span(data, handle.mm)
        with contextlib.suppress(KernelError):
            self.world.exerciser.map_range(handle, start, end)

    @precondition(lambda self: self.handles())
    @rule(data=st.data(), write=st.booleans())
    def device_access(self, data: st.DataObject, write: bool) -> None:
        handle = data.draw(st.sampled_from(self.handles()), label="handle")
        mm = handle.mm
        if contract.TRACKS_RANGES in self.world.caps and handle.ranges:
            start, end = data.draw(st.sampled_from(handle.ranges), label="range")
            pages = (end - start) >> mm.page_shift
            addr = start + (data.draw(st.integers(0, pages - 1), label="page") << mm.page_shift)
        elif mm.vmas:
            addr, _ = self.span(data, mm)
        else:
            return
        self.world.access(handle, addr, write, tries=1, verify=mm.alive)

    @rule()
    def synchronize(self) -> None:
        synchronize(self.world.kernel)
        self.world.check("after synchronize", settled=True)

    # -- checks ---------------------------------------------------------------------
    @invariant()
    def every_invariant(self) -> None:
        self.world.check("after this step")

    def teardown(self) -> None:
        world = self.world
        for handle in list(world.held()):
            world.detach(handle)
        synchronize(world.kernel)
        world.check("after detaching everything", settled=True)
        for mm in self.alive():
            mm.exit()
        world.exerciser.unload()
        world.settle("after every exit and the unload")


def test_state_machine(mmu_driver: DriverUnderTest, mmu_options: KitOptions) -> None:
    """Random sequences of process and device events keep every invariant after every step."""
    machine: Any = type(f"ConformanceMachine_{mmu_driver.name}", (ConformanceMachine,), {"dut": mmu_driver})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=mmu_options.examples,
            stateful_step_count=mmu_options.steps,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
