"""Threaded stress: get/put/invalidate/mmap/munmap/exit on shared mms (core issue, "Tests").

Ends with allocs == frees after synchronize, no callback ever delivered to a
freed subscription (the poisoned object would raise UseAfterFreeError in the
thread), no WARN and no deferred-callback bug.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from recording import RecordingDriver

import mmu_notifier as mn

PAGE = 4096


def _stress(seconds: float, threads: int, seed: int) -> None:
    kernel = mn.Kernel(frames=1 << 16)
    drivers = []
    for index in range(3):
        recording = RecordingDriver(refuse_nonblock=index == 0)
        kernel.drivers.add(recording, name=f"d{index}")
        drivers.append(recording)
    mms = [mn.MM(kernel) for _ in range(3)]
    mms_lock = threading.Lock()
    errors: list[BaseException] = []
    deadline = time.monotonic() + seconds

    def live_mm(rng: random.Random) -> mn.MM | None:
        with mms_lock:
            mm = rng.choice(mms)
            if not mm.mmget_not_zero():
                mms[mms.index(mm)] = mn.MM(kernel)
                return None
            return mm

    def worker(number: int) -> None:
        rng = random.Random(seed * 100 + number)
        held: list[mn.MMUNotifier] = []
        try:
            while time.monotonic() < deadline:
                mm = live_mm(rng)
                if mm is None:
                    continue
                try:
                    action = rng.randrange(8)
                    if action <= 1:
                        held.append(mn.get(rng.choice(drivers), mm))
                    elif action == 2 and held:
                        mn.put(held.pop(rng.randrange(len(held))))
                    elif action == 3:
                        addr = mm.mmap(2 * PAGE)
                        mm.fault(addr, write=True)
                        mm.munmap(addr, PAGE)
                    elif action == 4:
                        mm.oom_reap()
                    elif action == 5:
                        for vma in list(mm.vmas)[:2]:
                            mm.reclaim(vma.start)
                    elif action == 6 and rng.random() < 0.2:
                        with mms_lock:
                            if mm in mms:
                                mms[mms.index(mm)] = mn.MM(kernel)
                                mm.exit()  # drop the process's reference; ours keeps it alive
                finally:
                    mm.mmput()
            for sub in held:
                mn.put(sub)
        except BaseException as error:  # surfaced by the assertions below
            errors.append(error)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(seconds + 30)
    assert errors == []
    mn.synchronize(kernel)
    allocs = sum(len(d.calls("alloc")) for d in drivers)
    frees = sum(len(d.freed) for d in drivers)
    assert allocs == frees and allocs > 0
    assert kernel.warnings == [] and kernel.bugs == []
    for mm in mms:
        mm.exit()
    assert kernel.memory.in_use() == 0


def test_threaded_stress_balances_allocs_and_frees():
    _stress(seconds=1.0, threads=4, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_threaded_stress_long(seed):
    _stress(seconds=10.0, threads=6, seed=seed)
