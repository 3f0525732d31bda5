"""The main job's quiescent check of a process's mm on another OS thread while the process opens, uses and closes
devices, for every driver that keeps device translations.

In the threads mode the background thread checks a process's mm (``check_quiescent``: each exerciser's
``translations``) while the process goes on with its steps on its own thread. An exerciser that iterated its
live per-mm index (radeon's BOs, hmm's devices, rdma_odp's MRs and MTTs, gntdev's files) could raise
"dictionary changed size during iteration" there, which ended the background thread. (A read that meets an
object the process freed meanwhile is the check's own use after free, and the check drops that point: see
``check_quiescent``.) The GIL is switched at nearly every chance.
"""

from __future__ import annotations

import sys
import threading
import time

import pytest

from mmu_notifier import MM
from mmu_notifier import exerciser as contract
from mmu_notifier.errors import KernelError
from mmu_notifier.workload.default import DEFAULT
from mmu_notifier.workload.world import check_quiescent, new_world

SECONDS = 0.4
PAGES = 4


def _translating_drivers() -> list[str]:
    world = new_world(DEFAULT)
    return sorted(name for name, ex in world.exercisers.items() if contract.DEVICE_TRANSLATIONS in ex.capabilities)


@pytest.mark.parametrize("driver", _translating_drivers())
def test_translations_read_while_the_process_attaches_and_detaches(driver: str) -> None:
    world = new_world(DEFAULT.model_copy(update={"drivers": [driver]}))
    ex = world.exercisers[driver]
    mm = MM(world.kernel)
    start = mm.mmap(PAGES * mm.page_size)
    end = start + PAGES * mm.page_size
    for page in range(PAGES):
        mm.fault(start + page * mm.page_size, write=True)
    stop = threading.Event()
    process_errors: list[BaseException] = []
    rounds = [0]

    def process() -> None:  # the process's own steps: open, map, access, close, again
        try:
            while not stop.is_set():
                try:
                    handle = ex.attach(mm)
                except KernelError:
                    continue
                try:
                    ex.map_range(handle, start, end)
                    for page in range(PAGES):
                        ex.access(handle, start + page * mm.page_size, True)
                except KernelError:
                    pass
                finally:
                    ex.detach(handle)
                rounds[0] += 1
        except BaseException as error:
            process_errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    worker = threading.Thread(target=process, name="process", daemon=True)
    reads = 0
    try:
        worker.start()
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            check_quiescent(world, mm)  # the background thread's check of the process's mm
            reads += 1
    finally:
        stop.set()
        worker.join(10)
        sys.setswitchinterval(interval)
    assert not worker.is_alive() and not process_errors, process_errors
    assert reads > 0 and rounds[0] > 0 and world.quiescent_checks > 0
    assert not world.violations and not world.stats[driver].violations, world.stats[driver].violations
    mm.exit()
    ex.unload()
