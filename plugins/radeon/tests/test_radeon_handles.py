"""The DRM file's handle table under ``table_lock``, and the exerciser's access that looks a handle up once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mmu_notifier.errors import BadAddressError, InvalidArgumentError
from mmu_notifier_radeon.exerciser import RadeonExerciser


def test_a_closed_handle_is_not_found_and_cannot_be_removed_twice(machine: Callable[..., Any]) -> None:
    m = machine()
    mm, address = m.process()
    file = m.rdev.open(mm)
    handle, bo = m.userptr(file, address, 2)
    assert file.find(handle) is bo and file.lookup(handle) is bo
    m.rdev.gem_close(file, handle)
    assert file.find(handle) is None
    with pytest.raises(InvalidArgumentError, match="no GEM handle"):
        file.remove(handle)
    assert not file.table_lock.owner  # never left held
    m.finish()


def test_access_uses_the_newest_open_bo_covering_the_address(machine: Callable[..., Any]) -> None:
    m: Any = machine()
    ex = RadeonExerciser(m.radeon)
    mm, address = m.process()
    handle = ex.attach(mm)
    ex.map_range(handle, address, address + 2 * m.page)
    ex.map_range(handle, address, address + 2 * m.page)
    older, newer = (gem for _, _, gem in handle.state.bos[1:])
    frame = ex.access(handle, address, write=True)
    assert frame == handle.state.file.handles[newer].frame_at(address)
    m.rdev.gem_close(handle.state.file, newer)  # closed: the older BO covering the address serves the access
    assert ex.access(handle, address) == handle.state.file.handles[older].frame_at(address)
    m.rdev.gem_close(handle.state.file, older)
    with pytest.raises(BadAddressError):
        ex.access(handle, address)
    ex.detach(handle)
    m.finish()


def test_the_device_indexes_its_userptr_bos_by_mm(machine: Callable[..., Any]) -> None:
    m = machine()
    (one, a), (two, b) = m.process(), m.process()
    first, second = m.rdev.open(one), m.rdev.open(two)
    m.userptr(first, a, 2)
    m.userptr(second, b, 2)
    assert set(m.rdev.bos_of_mm) == {one, two}
    assert set(m.rdev.translations(one)) == {(a >> one.page_shift) + i for i in range(2)}
    m.rdev.close(first)
    assert set(m.rdev.bos_of_mm) == {two} and m.rdev.translations(one) == {}
    m.rdev.close(second)
    assert m.rdev.bos_of_mm == {} and not m.rdev.bos
    m.finish()
