"""The allocator room: kfree poisons any object, later touches and second frees name the free site."""

from __future__ import annotations

import pytest

from mmu_notifier import MMUNotifier, kmem
from mmu_notifier.errors import DoubleFreeError, UseAfterFreeError


class Thing:
    """A driver's kmalloc'ed object."""

    def __init__(self) -> None:
        self.field = 1


def test_a_live_object_keeps_its_class_and_is_not_freed() -> None:
    thing = Thing()
    assert type(thing) is Thing
    assert not kmem.is_freed(thing)
    assert kmem.free_site(thing) is None
    assert kmem.allocated_class(thing) is Thing


def test_kfree_poisons_reads_and_writes_and_names_the_free_site() -> None:
    thing = Thing()
    kmem.kfree(thing)
    assert kmem.is_freed(thing)
    assert kmem.allocated_class(thing) is Thing
    assert "in test_kfree_poisons_reads_and_writes_and_names_the_free_site" in (kmem.free_site(thing) or "")
    with pytest.raises(UseAfterFreeError, match=r"Thing\.field touched after kfree") as read:
        thing.field  # noqa: B018 - the read is the use after free
    assert read.value.free_site == kmem.free_site(thing)
    with pytest.raises(UseAfterFreeError, match=r"Thing\.field touched after kfree"):
        thing.field = 2
    assert repr(thing).startswith("<freed Thing at ")


def test_a_second_kfree_is_a_double_free_naming_the_first_site() -> None:
    thing = Thing()
    kmem.kfree(thing)
    first = kmem.free_site(thing)
    with pytest.raises(DoubleFreeError, match=r"Thing freed twice \(again at .* in test_a_second") as info:
        kmem.kfree(thing)
    assert info.value.free_site == first
    assert kmem.free_site(thing) == first  # the failed free changed nothing


def test_poison_records_the_given_site_and_freer_on_a_subscription() -> None:
    sub = MMUNotifier()
    kmem.poison(sub, "driver.py:7 in teardown", freed_by="free_notifier")
    assert kmem.free_site(sub) == "driver.py:7 in teardown"
    with pytest.raises(UseAfterFreeError, match=r"MMUNotifier\.users touched after free_notifier"):
        sub.users  # noqa: B018 - the read is the use after free


def test_poisoned_classes_carry_the_documented_marker() -> None:
    thing = Thing()
    kmem.kfree(thing)
    assert getattr(type(thing), kmem.POISON_MARK) is True
    assert type(thing).__mro__[1] is Thing


def test_the_old_names_are_the_allocator_rooms_for_one_release() -> None:
    from mmu_notifier import legacy, notifier

    assert notifier.is_freed is kmem.is_freed
    assert legacy.kfree is kmem.kfree
