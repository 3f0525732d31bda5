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

from mmu_notifier.workload.model import Background, Process, Step, Workload

DEFAULT = Workload(
    name="default",
    processes=[
        Process(
            name="worker",
            count=3,
            repeat=2,
            steps=[
                Step(op="mmap", pages=4),
                Step(op="touch", write=True),
                Step(op="attach"),
                Step(op="attach"),  # a second thread opens the device: the same subscription, users 2
                Step(op="map"),
                Step(op="access", write=True),
                Step(op="mmap", pages=2),
                Step(op="touch", region=1, write=True),
                Step(op="map", region=1),
                Step(op="access", region=1),
                Step(op="fork"),
                Step(op="access", write=True),
                Step(op="mprotect"),
                Step(op="access"),
                Step(op="mprotect", write=True),
                Step(op="madvise", region=1),
                Step(op="access", region=1),
                Step(op="mremap", pages=2),
                Step(op="access"),
                Step(op="soft_dirty"),
                Step(op="munmap", region=1),
                Step(op="detach"),
                Step(op="detach"),
            ],
        ),
        Process(
            name="exiter",
            count=2,
            steps=[
                Step(op="mmap", pages=3),
                Step(op="touch", write=True),
                Step(op="attach"),
                Step(op="map"),
                Step(op="access"),
                Step(op="oom_reap"),  # the OOM killer's victim: reaped, then it exits
                Step(op="exit"),
                Step(op="detach"),
            ],
        ),
    ],
    background=Background(reclaim=12, migrate=8, age=8),
)
