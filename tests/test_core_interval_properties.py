"""Interval notifiers against a reference model for every sequence of insert/remove/invalidate/read/exit (hypothesis).

The machine drives one mm single-threaded: ranges are opened and closed in
any order (nested, overlapping), subscriptions inserted and removed at any
point, readers sampled, and the mm may exit. A plain-Python reference model
of 5.5's rules (kernel-semantics.md section 5) predicts the sequence, the
active count, the tree, the deferred list (head first), each subscription's
sequence and every ``invalidate`` call; after every step the model's state
must equal the core's and invariants 17-19 must hold. A remove or
``read_begin`` the model predicts would wait is checked as "would wait"
instead of being called (nothing else runs to wake it).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from interval_driver import IntervalRecorder

import mmu_notifier as mn
from mmu_notifier import notifier
from mmu_notifier.invariants import interval as interval_invariants
from mmu_notifier.itree import ULONG_MAX
from mmu_notifier.mm import TASK_SIZE
from mmu_notifier.range import Event, Range

PAGE = 4096


class Model:
    """The reference: 5.5's interval rules over plain Python values."""

    def __init__(self) -> None:
        self.seq = 2
        self.active = 0
        self.tree: list[int] = []  # subscription indices, insertion order
        self.deferred: list[int] = []  # head first
        self.sub_seq: dict[int, int] = {}
        self.span: dict[int, tuple[int, int]] = {}

    def insert(self, i: int, start: int, last: int) -> None:
        self.span[i] = (start, last)
        if self.active:
            if self.seq & 1:
                self.sub_seq[i] = self.seq
                self.deferred.insert(0, i)
                return
            self.seq |= 1
            self.sub_seq[i] = self.seq
        else:
            self.sub_seq[i] = self.seq - 1
        self.tree.append(i)

    def remove_waits(self, i: int) -> bool:
        return bool(self.seq & 1) and i in self.tree

    def remove(self, i: int) -> None:
        if self.seq & 1:
            self.deferred.remove(i)  # a pending insert (a waiting remove is never called)
        else:
            self.tree.remove(i)

    def hits(self, start: int, end: int) -> list[int]:
        found = [i for i in self.tree if self.span[i][0] <= end - 1 and self.span[i][1] >= start]
        return sorted(found, key=lambda i: (self.span[i][0], self.tree.index(i)))

    def start(self, start: int, end: int) -> tuple[list[int], int]:
        self.active += 1
        hit = self.hits(start, end)
        if hit:
            self.seq |= 1
        for i in hit:
            self.sub_seq[i] = self.seq
        return hit, self.seq

    def end(self) -> None:
        self.active -= 1
        if self.active or not self.seq & 1:
            return
        self.seq += 1
        for i in self.deferred:
            if i in self.tree:
                self.tree.remove(i)
            else:
                self.tree.append(i)
        self.deferred = []


class IntervalMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.kernel = mn.Kernel(frames=64)
        self.driver = IntervalRecorder()
        self.kernel.drivers.add(self.driver)
        self.mm = mn.MM(self.kernel)
        self.model = Model()
        self.subs: list[mn.MMUIntervalNotifier] = []
        self.live: set[int] = set()
        self.open: list[Range] = []
        self.reads: list[tuple[int, int, int]] = []  # (sub index, seq read, len(driver.log) at the read)
        self.exited = False

    # -- rules --------------------------------------------------------------------
    @rule(page=st.integers(0, 15), pages=st.integers(1, 4))
    def insert(self, page: int, pages: int) -> None:
        sub = mn.MMUIntervalNotifier()
        i = len(self.subs)
        self.subs.append(sub)
        if self.exited and self.mm.mmu_notifier_mm is None:
            return
        mn.interval_notifier_insert(sub, self.mm, page * PAGE, pages * PAGE, self.driver)
        self.model.insert(i, page * PAGE, (page + pages) * PAGE - 1)
        self.live.add(i)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        i = data.draw(st.sampled_from(sorted(self.live)))
        sub = self.subs[i]
        if self.model.remove_waits(i):
            state = interval_invariants.state_of(self.mm)
            assert state is not None and sub.in_tree and state.invalidate_seq & 1  # remove would wait
            return
        count = self.mm.mm_count.value
        calls = len(self.driver.log)
        mn.interval_notifier_remove(sub)
        self.model.remove(i)
        self.live.discard(i)
        assert self.mm.mm_count.value == count - 1 and not sub.in_tree and not sub.deferred
        assert len(self.driver.log) == calls

    @rule(page=st.integers(0, 20), pages=st.integers(1, 6))
    def start(self, page: int, pages: int) -> None:
        if self.mm.mmu_notifier_mm is None:
            return
        rng = Range(self.mm, page * PAGE, (page + pages) * PAGE, Event.CLEAR)
        calls = len(self.driver.log)
        notifier.invalidate_range_start(rng)
        expected, cur_seq = self.model.start(rng.start, rng.end)
        got = self.driver.log[calls:]
        assert [entry[0] for entry in got] == [self.subs[i] for i in expected]
        assert all(entry[5] == cur_seq and cur_seq & 1 for entry in got)
        self.open.append(rng)

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def end(self, data: st.DataObject) -> None:
        rng = self.open.pop(data.draw(st.integers(0, len(self.open) - 1)))
        notifier.invalidate_range_end(rng)
        self.model.end()

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def read_begin(self, data: st.DataObject) -> None:
        i = data.draw(st.sampled_from(sorted(self.live)))
        sub = self.subs[i]
        busy = self.model.sub_seq[i] == self.model.seq
        if busy:  # read_begin would wait for the epoch's last end
            state = interval_invariants.state_of(self.mm)
            assert state is not None and sub.invalidate_seq == state.invalidate_seq
            return
        seq = mn.interval_read_begin(sub)
        assert seq == self.model.sub_seq[i]
        self.reads.append((i, seq, len(self.driver.log)))

    @precondition(lambda self: self.reads)
    @rule(data=st.data())
    def read_retry(self, data: st.DataObject) -> None:
        i, seq, at = self.reads[data.draw(st.integers(0, len(self.reads) - 1))]
        sub = self.subs[i]
        set_since = any(entry[0] is sub for entry in self.driver.log[at:])
        assert mn.interval_read_retry(sub, seq) is set_since
        assert mn.interval_check_retry(sub, seq) is set_since

    @precondition(lambda self: not self.exited and not self.open)
    @rule()
    def exit(self) -> None:
        calls = len(self.driver.log)
        in_tree = list(self.model.tree)
        self.mm.exit()
        self.exited = True
        if self.mm.mmu_notifier_mm is None:
            return
        expected, cur_seq = self.model.start(0, ULONG_MAX)
        self.model.end()
        # then exit_mmap unmaps everything (unmap_vmas over [0, -1) in the kernel): an UNMAP range
        unmapped, unmap_seq = self.model.start(0, TASK_SIZE)
        self.model.end()
        got = self.driver.log[calls:]
        release, unmap = got[: len(expected)], got[len(expected):]
        assert [entry[0] for entry in release] == [self.subs[i] for i in expected]
        assert sorted(expected) == sorted(in_tree)
        assert all(e[1] is Event.RELEASE and e[4] and (e[2], e[3]) == (0, ULONG_MAX) for e in release)
        assert all(entry[5] == cur_seq for entry in release)
        assert [entry[0] for entry in unmap] == [self.subs[i] for i in unmapped]
        assert all(entry[1] is Event.UNMAP and entry[5] == unmap_seq for entry in unmap)

    # -- invariants ---------------------------------------------------------------
    @invariant()
    def matches_the_model(self) -> None:
        state = interval_invariants.state_of(self.mm)
        if state is None:
            assert not self.live
            return
        model = self.model
        assert (state.invalidate_seq, state.active_invalidate_ranges) == (model.seq, model.active)
        assert [self.subs.index(s) for s in state.deferred] == model.deferred
        assert sorted(self.subs.index(s) for s in state.itree) == sorted(model.tree)
        for i in self.live:
            assert self.subs[i].invalidate_seq == model.sub_seq[i]
        assert interval_invariants.check_state(self.mm, active=len(self.open)) == []
        assert self.kernel.warnings == []

    @invariant()
    def pins(self) -> None:
        if not self.mm.freed:
            assert self.mm.mm_count.value == len(self.live) + (0 if self.exited else 1)

    def teardown(self) -> None:
        while self.open:
            notifier.invalidate_range_end(self.open.pop())
        for i in sorted(self.live):
            mn.interval_notifier_remove(self.subs[i])
        if not self.exited:
            self.mm.exit()
        assert self.mm.freed


IntervalMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_interval_state_machine = IntervalMachine.TestCase
