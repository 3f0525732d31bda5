"""The main job's process steps: what each step of a workload does to the machine.

A :class:`ProcessRunner` is one user process as a model thread: its mm, the
ranges it mapped and the device files it opened, stepping through its spec
(mmap, touch, mprotect, madvise, munmap, mremap, fork, soft-dirty clearing,
OOM reaping, exit, and the device operations attach, map, access, detach
through each driver's exerciser). :func:`background` is the kernel's own
threads (reclaim, migration, aging). The machine they act on is
:mod:`mmu_notifier.workload.world`.

Every call into a driver's exerciser goes through :meth:`ProcessRunner._device`:
it is registered for the watchdog, and an exception other than a
:class:`~mmu_notifier.errors.KernelError` (the driver's own bug, or an
``alloc_notifier`` that raised) becomes a fault of that driver and fails the
step; the process goes on with its next step. A callback's exception is
caught by the tracer (:mod:`mmu_notifier.workload.stats`) and fails the step
it happened in the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from greenlet import getcurrent

from mmu_notifier import sync
from mmu_notifier.errors import KernelError
from mmu_notifier.exerciser import Handle
from mmu_notifier.mm import MM, RW, Prot
from mmu_notifier.workload import refusals
from mmu_notifier.workload.model import Process, ProcessStep
from mmu_notifier.workload.world import JobWorld, Region, check_quiescent, exit_coherence

__all__ = ["ProcessRunner", "background"]


class ProcessRunner:
    """One process: its mm, its regions and its device handles, stepping through its spec."""

    def __init__(self, world: JobWorld, spec: Process, number: int) -> None:
        self.world = world
        self.spec = spec
        self.name = f"{spec.name}{number}"
        self.mm: MM | None = None
        self.regions: list[Region] = []
        #: open device handles per driver, oldest first (each attach is another open)
        self.handles: dict[str, list[Handle]] = {}

    def run(self) -> None:
        """The thread body: every repetition of every step, then clean up like an exiting process."""
        for _ in range(self.spec.repeat):
            for step in self.spec.steps:
                self.step(step)
                self.world.count_step()
                check_quiescent(self.world, self.mm)
        self.detach(None, every=True)
        if self.mm is not None:
            self._exit()

    def _live_mm(self) -> MM:
        if self.mm is None:  # a new incarnation after an exit
            self.mm = self.world.monitor.track_mm(MM(self.world.kernel))
            self.regions = []
            self.world.live[id(self.mm)] = self.mm
            self.world.every_mm.append(self.mm)
        return self.mm

    def _region(self, step: ProcessStep) -> Region | None:
        return self.regions[step.region % len(self.regions)] if self.regions else None

    def _drivers(self, step: ProcessStep) -> list[str]:
        names = list(self.world.exercisers)
        return [step.driver] if step.driver in names else names if step.driver is None else []

    def step(self, step: ProcessStep) -> None:
        """Do one step; a step whose precondition is missing, or that the kernel refuses, is skipped; a step
        in which a driver's code raised has failed (the fault is that driver's violation)."""
        action = getattr(self, f"_op_{step.op}")
        faults = len(self.world.tracer.faults)
        failed = False
        try:
            done = action(step)
        except _DeviceFault:
            done, failed = False, True
        except KernelError:
            done = False
        if failed or (len(self.world.tracer.faults) > faults and self._faulted_since(faults)):
            self.world.failed += 1
        elif done is False:
            self.world.skipped += 1

    def _faulted_since(self, index: int) -> bool:
        me = getcurrent()
        return any(fault.owner is me for fault in self.world.tracer.faults[index:])

    def _device(self, name: str, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """Call into ``name``'s exerciser: registered for the watchdog; its own exception is its fault."""
        try:
            with self.world.tracer.calling(name, what):
                return call(*args)
        except KernelError:
            raise
        except Exception as error:
            self.world.driver_fault(name, what, error)
            raise _DeviceFault from None

    # -- memory -----------------------------------------------------------
    def _op_mmap(self, step: ProcessStep) -> None:
        mm = self._live_mm()
        self.regions.append(Region(mm.mmap(step.pages * mm.page_size), step.pages))

    def _with_region(self, step: ProcessStep, action: Callable[[MM, Region], object]) -> bool:
        region = self._region(step)
        if region is None or self.mm is None:
            return False
        action(self.mm, region)
        return True

    def _op_touch(self, step: ProcessStep) -> bool:
        def touch(mm: MM, region: Region) -> None:
            for page in range(region.pages):
                mm.fault(region.start + page * mm.page_size, write=step.write)

        return self._with_region(step, touch)

    def _op_mprotect(self, step: ProcessStep) -> bool:
        prot = RW if step.write else Prot.READ
        return self._with_region(step, lambda mm, r: mm.mprotect(r.start, r.pages * mm.page_size, prot))

    def _op_madvise(self, step: ProcessStep) -> bool:
        return self._with_region(step, lambda mm, r: mm.madvise_dontneed(r.start, r.pages * mm.page_size))

    def _op_munmap(self, step: ProcessStep) -> bool:
        region = self._region(step)
        if not self._with_region(step, lambda mm, r: mm.munmap(r.start, r.pages * mm.page_size)):
            return False
        self.regions.remove(region)  # type: ignore[arg-type]
        return True

    def _op_mremap(self, step: ProcessStep) -> bool:
        def grow(mm: MM, region: Region) -> None:
            size = mm.page_size
            region.start = mm.mremap(region.start, region.pages * size, (region.pages + step.pages) * size)
            region.pages += step.pages

        return self._with_region(step, grow)

    def _op_fork(self, step: ProcessStep) -> bool:
        def fork(mm: MM, region: Region) -> None:
            child = mm.fork()
            try:
                child.fault(region.start, write=True)  # breaks COW in the child
            except KernelError:
                pass  # a read-only region: the child only reads
            finally:
                child.exit()

        return self._with_region(step, fork)

    def _op_soft_dirty(self, step: ProcessStep) -> bool:
        if self.mm is None:
            return False
        self.mm.clear_soft_dirty()
        return True

    def _op_oom_reap(self, step: ProcessStep) -> bool:
        if self.mm is None:
            return False
        self.mm.oom_reap()
        return True

    def _op_exit(self, step: ProcessStep) -> bool:
        if self.mm is None:
            return False
        self._exit()
        return True

    def _exit(self) -> None:
        assert self.mm is not None
        mm = self.mm
        del self.world.live[id(mm)]
        mm.exit()
        self.mm = None
        exit_coherence(self.world, mm)

    # -- devices ----------------------------------------------------------
    def _op_attach(self, step: ProcessStep) -> bool:
        mm = self._live_mm()
        done = False
        failed = False
        for name in self._drivers(step):
            try:
                opened = self._device(name, "attach", self.world.exercisers[name].attach, mm)
            except (_DeviceFault, KernelError) as error:  # this driver only: the others still attach
                failed = failed or isinstance(error, _DeviceFault)
                continue
            handle = self.world.monitor.attached(name, opened)
            self.handles.setdefault(name, []).append(handle)
            stats = self.world.stats[name]
            stats.attaches += 1
            if handle.subscription is not None:  # None: an interval_only driver holds no list subscription
                stats.subscriptions.add(handle.subscription)
                stats.peak_users = max(stats.peak_users, handle.subscription.users)
            done = True
        if failed:
            raise _DeviceFault
        return done

    def _op_map(self, step: ProcessStep) -> bool:
        region = self._region(step)
        if region is None or self.mm is None:
            return False
        end = region.start + region.pages * self.mm.page_size
        for name in self._drivers(step):
            for handle in self.handles.get(name, ()):
                try:
                    self._device(name, "map_range", self.world.exercisers[name].map_range, handle, region.start, end)
                except _DeviceFault:
                    break  # recorded; the other drivers still map
        return True

    def _op_access(self, step: ProcessStep) -> bool:
        region = self._region(step)
        if region is None or self.mm is None:
            return False
        page_size = self.mm.page_size
        for name in self._drivers(step):
            if not self.handles.get(name):
                continue
            handle = self.handles[name][0]
            stats = self.world.stats[name]
            before = refusals.quiet(self.world, name, self.mm)
            served = refused = 0
            for page in range(region.pages):
                try:
                    pfn = self._device(name, "access", self.world.exercisers[name].access, handle,
                                       region.start + page * page_size, step.write)
                except KernelError:
                    stats.retries += 1  # no translation; an error, not a "retry", so not judged as a refusal
                    continue
                except _DeviceFault:
                    break  # recorded; the other drivers still access
                if pfn is None:
                    stats.retries += 1
                    refused += 1
                else:
                    stats.device_faults += 1
                    served += 1
            else:
                refusals.judge_access(self.world, name, self.mm, before, served, refused)
        return True

    def _op_detach(self, step: ProcessStep) -> bool:
        return self.detach(step.driver, every=False)

    def detach(self, only: str | None, every: bool = True) -> bool:
        """Close the newest handle of each driver (or of ``only``); with ``every``, all of them."""
        done = False
        for name, handles in self.handles.items():
            if only is not None and name != only:
                continue
            while handles:
                handle = handles.pop()
                self.world.monitor.detached(name, handle)
                done = True
                try:
                    self._device(name, "detach", self.world.exercisers[name].detach, handle)
                    self.world.stats[name].detaches += 1
                except (_DeviceFault, KernelError):
                    pass  # the fault is recorded; what the driver leaked is named by the end-of-run checks
                if not every:
                    break
        return done


class _DeviceFault(Exception):
    """A driver's exerciser raised (already recorded as that driver's fault): the step failed."""


def background(world: JobWorld, rng: random.Random) -> None:
    """The kernel's own threads: reclaim, migrate and age random live pages.

    The live address spaces are copied at once (``list`` of the dict's values: one C call, no GIL switch inside)
    before each is asked whether it is alive: on OS threads (the threads mode) the processes start and exit
    while this thread picks, and a switch inside an iteration of ``world.live`` (``alive`` is a Python call)
    would let one of them change the dict under it (``RuntimeError``: the background thread's end). As the
    kernel's reverse map walk, the pick then works on an mm that may be exiting: ``mmget_not_zero`` decides.
    """
    plan = world.workload.background
    ops = ["reclaim"] * plan.reclaim + ["migrate"] * plan.migrate + ["age"] * plan.age
    rng.shuffle(ops)
    for op in ops:
        sync.yield_now()
        candidates = [mm for mm in list(world.live.values()) if mm.alive]
        if not candidates:
            continue
        mm = rng.choice(candidates)
        if not mm.mmget_not_zero():
            continue
        try:
            with mm.page_table_lock:
                pages = sorted(mm.page_table.entries)
            if pages:
                addr = rng.choice(pages) << mm.page_shift
                if op == "reclaim":
                    mm.reclaim(addr)
                elif op == "migrate":
                    mm.migrate(addr)
                else:
                    mm.clear_flush_young(addr)
                world.count_step()
                check_quiescent(world, mm)
        finally:
            mm.mmput()
