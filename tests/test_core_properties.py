"""Registration rules that must hold for every sequence of get/put/exit/synchronize (hypothesis)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from recording import RecordingDriver

import mmu_notifier as mn
from mmu_notifier.kmem import is_freed


class GetPutMachine(RuleBasedStateMachine):
    """Two drivers, three mms; the model's state is compared with a plain count after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = mn.Kernel(frames=256)
        self.drivers = [RecordingDriver(), RecordingDriver()]
        for index, driver in enumerate(self.drivers):
            self.kernel.drivers.add(driver, name=f"d{index}")
        self.mms = [mn.MM(self.kernel) for _ in range(3)]
        self.exited: set[int] = set()
        self.held: list[mn.MMUNotifier] = []
        self.expected_users: dict[tuple[int, int], int] = {}

    @precondition(lambda self: len(self.exited) < 3)
    @rule(d=st.integers(0, 1), m=st.integers(0, 2))
    def get(self, d, m):
        if m in self.exited:
            return
        sub = mn.get(self.drivers[d], self.mms[m])
        key = (d, m)
        self.expected_users[key] = self.expected_users.get(key, 0) + 1
        assert sub.users == self.expected_users[key]
        self.held.append(sub)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def put(self, data):
        sub = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        key = (self.drivers.index(sub.ops.driver), self.mms.index(sub.mm))
        mn.put(sub)
        if key in self.expected_users:  # not counted any more once its mm exited
            self.expected_users[key] -= 1
            if not self.expected_users[key]:
                del self.expected_users[key]

    @rule(m=st.integers(0, 2))
    def exit(self, m):
        if m not in self.exited:
            self.exited.add(m)
            self.mms[m].exit()
            # exit unlinks: the next get on that mm is impossible, the held ones still owe a put
            self.expected_users = {k: v for k, v in self.expected_users.items() if k[1] != m}

    @rule()
    def synchronize(self):
        mn.synchronize(self.kernel)
        allocated = sum(len(d.allocated) for d in self.drivers)
        held = {id(s) for s in self.held}
        freed = sum(len(d.freed) for d in self.drivers)
        assert allocated - freed == len(held)

    @invariant()
    def one_linked_subscription_per_driver_and_mm(self):
        for mm in self.mms:
            container = mm.mmu_notifier_mm
            if container is None:
                continue
            names = [sub.ops.name for sub in container.subscriptions]
            assert len(names) == len(set(names))

    @invariant()
    def nothing_freed_while_held(self):
        assert not any(is_freed(sub) for sub in self.held)
        assert self.kernel.warnings == [] and self.kernel.bugs == []

    def teardown(self):
        for sub in self.held:
            mn.put(sub)
        mn.synchronize(self.kernel)
        for index, mm in enumerate(self.mms):
            if index not in self.exited:
                mm.exit()
        assert all(mm.freed for mm in self.mms)
        assert sum(len(d.allocated) for d in self.drivers) == sum(len(d.freed) for d in self.drivers)


TestGetPut = GetPutMachine.TestCase
TestGetPut.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
