"""For any configuration and any sequence of user actions: once every process exited and the module
unloaded, every PASID and doorbell slice is back in its pool and every kfd_process was freed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmu_notifier.errors import KernelError
from mmu_notifier_amdkfd.faults import STEPS

MMS = 3
_fault = st.one_of(
    st.none(),
    st.builds(dict, nth=st.integers(1, 4)),
    st.builds(dict, probability=st.floats(0.0, 1.0), seed=st.integers(0, 1000)),
)
_configs = st.fixed_dictionaries(
    {
        "scheme": st.sampled_from(("5.4", "get", "legacy")),
        "gpus": st.integers(1, 3),
        "cwsr": st.booleans(),
        "pasid_max": st.integers(2, 4),
        "doorbell_slices": st.integers(2, 4),
        "queues_per_process": st.integers(1, 3),
        "faults": st.fixed_dictionaries({step: _fault for step in STEPS}),
    }
)
_actions = st.lists(
    st.tuples(st.sampled_from(("open", "queue", "access", "evict", "munmap", "exit")), st.integers(0, MMS - 1)),
    max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=_configs, actions=_actions)
def test_every_pasid_and_doorbell_returns_after_exit_and_synchronize(
    machine: Callable[..., Any], config: dict[str, Any], actions: list[tuple[str, int]]
) -> None:
    m = machine(**config)
    worlds = [m.mm(pages=2) for _ in range(MMS)]
    kfd = m.kfd
    for action, which in actions:
        mm, address = worlds[which]
        if not mm.alive:
            continue
        with contextlib.suppress(KernelError):
            if action == "open":
                kfd.kfd_create_process(mm)
            elif action == "queue":
                kfd.create_queue(mm, which % config["gpus"], address, address + mm.page_size)
            elif action == "access":
                kfd.device_access(mm, address, write=True)
            elif action == "evict":
                kfd.schedule_evict_and_restore_process(mm)
            elif action == "munmap":
                mm.munmap(address, 2 * mm.page_size)
            else:
                mm.exit()
    m.teardown()
    assert m.kernel.warnings == [] and m.kernel.bugs == []
    assert kfd.pasids.in_use() == frozenset()
    assert kfd.doorbell_slices.in_use() == frozenset()
    assert kfd.live == set() and len(kfd.table) == 0
    # 5.3's error path never drops the lead-thread reference it took before the failing step
    late_failures = sum(kfd.faults.failed(step) for step in STEPS) if config["scheme"] == "legacy" else 0
    assert kfd.task_refs.value == late_failures
    assert all(mm.freed for mm, _ in worlds)
