"""The interval tree (model of include/linux/interval_tree_generic.h) against a brute-force list."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mmu_notifier.errors import InvalidArgumentError
from mmu_notifier.itree import ULONG_MAX, IntervalTree

_ids = itertools.count()


class Node:
    """A caller-owned node; equality is identity, like a kernel struct embedding the rb node."""

    def __init__(self, start: int, last: int) -> None:
        self.start = start
        self.last = last
        self.ident = next(_ids)

    def __repr__(self) -> str:
        if isinstance(self.start, int) and isinstance(self.last, int):
            return f"Node#{self.ident}[{self.start:#x}, {self.last:#x}]"
        return f"Node#{self.ident}[{self.start!r}, {self.last!r}]"


def brute(nodes: list[Node], start: int, last: int) -> list[Node]:
    """Overlapping nodes in address order (equal starts in insertion order)."""
    hits = [n for n in nodes if n.start <= last and n.last >= start]
    return sorted(hits, key=lambda n: (n.start, n.ident))


addresses = st.one_of(st.integers(0, 64), st.sampled_from([0, 1, ULONG_MAX - 1, ULONG_MAX]), st.integers(0, ULONG_MAX))


class TreeMachine(RuleBasedStateMachine):
    """Random insert/remove/query sequences, duplicates included, checked after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.tree: IntervalTree[Node] = IntervalTree("prop", seed=1)
        self.nodes: list[Node] = []  # insertion order

    @rule(a=addresses, b=addresses)
    def insert(self, a: int, b: int) -> None:
        node = Node(min(a, b), max(a, b))
        self.tree.insert(node)
        self.nodes.append(node)

    @precondition(lambda self: bool(self.nodes))
    @rule(i=st.integers(0, 1000))
    def insert_duplicate(self, i: int) -> None:
        old = self.nodes[i % len(self.nodes)]
        node = Node(old.start, old.last)
        self.tree.insert(node)
        self.nodes.append(node)

    @precondition(lambda self: bool(self.nodes))
    @rule(i=st.integers(0, 1000))
    def remove(self, i: int) -> None:
        node = self.nodes.pop(i % len(self.nodes))
        self.tree.remove(node)
        assert node not in self.tree

    @rule(a=addresses, b=addresses)
    def query(self, a: int, b: int) -> None:
        start, last = min(a, b), max(a, b)
        expect = brute(self.nodes, start, last)
        assert list(self.tree.iter_overlap(start, last)) == expect
        assert self.tree.first_overlap(start, last) is (expect[0] if expect else None)

    @precondition(lambda self: bool(self.nodes))
    @rule(a=addresses, b=addresses)
    def remove_while_iterating(self, a: int, b: int) -> None:
        start, last = min(a, b), max(a, b)
        expect = brute(self.nodes, start, last)
        seen = []
        for node in self.tree.iter_overlap(start, last):
            seen.append(node)
            self.tree.remove(node)
            self.nodes.remove(node)
        assert seen == expect
        assert self.tree.first_overlap(start, last) is None

    @invariant()
    def consistent(self) -> None:
        self.tree.check()
        assert len(self.tree) == len(self.nodes)
        assert list(self.tree) == sorted(self.nodes, key=lambda n: (n.start, n.ident))


TestTreeMachine = TreeMachine.TestCase
TestTreeMachine.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)


def test_inclusive_last_and_single_address() -> None:
    tree: IntervalTree[Node] = IntervalTree()
    a, b = Node(0x1000, 0x1FFF), Node(0x2000, 0x2FFF)
    tree.insert(a)
    tree.insert(b)
    assert list(tree.iter_overlap(0x1FFF, 0x1FFF)) == [a]
    assert list(tree.iter_overlap(0x2000, 0x2000)) == [b]
    assert list(tree.iter_overlap(0x1FFF, 0x2000)) == [a, b]
    assert list(tree.iter_overlap(0x3000, ULONG_MAX)) == []
    assert list(tree.iter_overlap(5, 4)) == []  # empty query range


def test_duplicates_come_in_insertion_order() -> None:
    tree: IntervalTree[Node] = IntervalTree(seed=3)
    nodes = [Node(0x1000, 0x1FFF) for _ in range(50)]
    for node in nodes:
        tree.insert(node)
    assert list(tree.iter_overlap(0x1800, 0x1800)) == nodes
    tree.remove(nodes[10])
    assert list(tree) == nodes[:10] + nodes[11:]


def test_remove_absent_node_is_typed_error_naming_it_and_changes_nothing() -> None:
    tree: IntervalTree[Node] = IntervalTree("umem tree")
    kept, stranger = Node(0, 9), Node(0, 9)
    tree.insert(kept)
    with pytest.raises(InvalidArgumentError, match=r"umem tree.*Node#\d+\[0x0, 0x9\].*not in the tree"):
        tree.remove(stranger)
    assert list(tree) == [kept]
    tree.remove(kept)
    with pytest.raises(InvalidArgumentError, match="not in the tree"):
        tree.remove(kept)  # twice
    assert len(tree) == 0


@pytest.mark.parametrize(("start", "last"), [(5, 4), (-1, 3), (0, ULONG_MAX + 1), (1.0, 2), (True, 3)], ids=str)
def test_bad_interval_rejected_before_insert(start: object, last: object) -> None:
    tree: IntervalTree[Node] = IntervalTree("t")
    node = Node(0, 0)
    node.start, node.last = start, last  # type: ignore[assignment]
    with pytest.raises(InvalidArgumentError, match="node Node#"):
        tree.insert(node)
    assert len(tree) == 0 and node not in tree


def test_insert_twice_is_typed_error() -> None:
    tree: IntervalTree[Node] = IntervalTree("t")
    node = Node(1, 2)
    tree.insert(node)
    with pytest.raises(InvalidArgumentError, match="already in the tree"):
        tree.insert(node)
    assert len(tree) == 1
    tree.check()


def test_removing_the_next_node_during_iteration_is_reported() -> None:
    tree: IntervalTree[Node] = IntervalTree("t", seed=0)
    nodes = [Node(i, i + 10) for i in range(5)]
    for node in nodes:
        tree.insert(node)
    it = tree.iter_overlap(0, 100)
    assert next(it) is nodes[0]
    tree.remove(nodes[1])
    with pytest.raises(InvalidArgumentError, match="removed during an overlap iteration"):
        next(it)


def test_large_tree_stays_shallow_and_correct() -> None:
    import random

    rng = random.Random(7)
    tree: IntervalTree[Node] = IntervalTree(seed=7)
    nodes = []
    for _ in range(3000):
        start = rng.randrange(0, 1 << 40)
        node = Node(start, start + rng.choice([0, 0xFFF, 0x1FFFFF, 1 << 30]))
        tree.insert(node)
        nodes.append(node)
    for node in nodes[::3]:
        tree.remove(node)
    live = [n for i, n in enumerate(nodes) if i % 3]
    tree.check()
    for _ in range(50):
        a = rng.randrange(0, 1 << 40)
        assert list(tree.iter_overlap(a, a + 0xFFFF)) == brute(live, a, a + 0xFFFF)
