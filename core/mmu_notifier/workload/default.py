"""The built-in default workload of ``mmu-notifier run``.

Several processes use every installed driver through its exerciser while they
mmap, touch, mprotect, madvise, mremap, munmap, fork and exit; the kernel's
threads reclaim, migrate and age pages alongside. Workers detach before they
exit; exiters are OOM-reaped, exit, and detach afterwards (a put after release).

No device touches a reaped address space: in 5.4 a refused non-blockable start
sends no end to anybody, so a driver that counts starts (GRU's range_active)
stays counted until teardown and its next device fault would wait forever,
exactly as in the kernel before the later "end for everyone" change.
"""

from __future__ import annotations

from mmu_notifier.workload.model import Background, Process, ProcessStep, Workload

DEFAULT = Workload(
    name="default",
    processes=[
        Process(
            name="worker",
            count=3,
            repeat=2,
            steps=[
                ProcessStep(op="mmap", pages=4),
                ProcessStep(op="touch", write=True),
                ProcessStep(op="attach"),
                ProcessStep(op="attach"),  # a second thread opens the device: the same subscription, users 2
                ProcessStep(op="map"),
                ProcessStep(op="access", write=True),
                ProcessStep(op="mmap", pages=2),
                ProcessStep(op="touch", region=1, write=True),
                ProcessStep(op="map", region=1),
                ProcessStep(op="access", region=1),
                ProcessStep(op="fork"),
                ProcessStep(op="access", write=True),
                ProcessStep(op="mprotect"),
                ProcessStep(op="access"),
                ProcessStep(op="mprotect", write=True),
                ProcessStep(op="madvise", region=1),
                ProcessStep(op="access", region=1),
                ProcessStep(op="mremap", pages=2),
                ProcessStep(op="access"),
                ProcessStep(op="soft_dirty"),
                ProcessStep(op="munmap", region=1),
                ProcessStep(op="detach"),
                ProcessStep(op="detach"),
            ],
        ),
        Process(
            name="exiter",
            count=2,
            steps=[
                ProcessStep(op="mmap", pages=3),
                ProcessStep(op="touch", write=True),
                ProcessStep(op="attach"),
                ProcessStep(op="map"),
                ProcessStep(op="access"),
                ProcessStep(op="oom_reap"),  # the OOM killer's victim: reaped, then it exits
                ProcessStep(op="exit"),
                ProcessStep(op="detach"),
            ],
        ),
    ],
    background=Background(reclaim=12, migrate=8, age=8),
)
