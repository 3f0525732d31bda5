"""Fixtures of the hmm plugin's tests: a kernel with the driver loaded, a live mm, model mirrors.

Helpers are handed out as fixtures (not imported) so the tests run whatever
rootdir and ``sys.path`` pytest was started with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import mmu_notifier as mn
from mmu_notifier_hmm import HmmConfig, HmmDriver, HmmMirror, mirror_register


class RecordingMirror(HmmMirror):
    """A mirror that records its callbacks and answers ``sync`` with ``answer`` (for non-blockable ranges)."""

    def __init__(self, answer: int = 0, blockable_answer: int = 0) -> None:
        super().__init__()
        self.answer = answer
        self.blockable_answer = blockable_answer
        self.synced: list[mn.Range] = []
        self.released = 0

    def sync_cpu_device_pagetables(self, range: mn.Range) -> int:
        self.synced.append(range)
        return self.blockable_answer if range.blockable else self.answer

    def release(self) -> None:
        self.released += 1


World = tuple[mn.Kernel, HmmDriver, mn.MM]


@pytest.fixture
def make_world() -> Callable[..., World]:
    """``make_world(**config)``: a fresh kernel with an ``hmm`` driver of that config, and a live mm."""

    def make(**config: Any) -> World:
        kernel = mn.Kernel(frames=256)
        driver = HmmDriver(HmmConfig(**config))
        kernel.drivers.add(driver)
        return kernel, driver, mn.MM(kernel)

    return make


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    """The default (5.4 get/put) world."""
    return make_world()


def _register(mirror: HmmMirror, mm: mn.MM) -> None:
    """``hmm_mirror_register`` the way a driver calls it: under the mmap lock held for write."""
    mm.mmap_lock.down_write()
    try:
        mirror_register(mirror, mm)
    finally:
        mm.mmap_lock.up_write()


def _mapped(mm: mn.MM, pages: int, fault: bool = True) -> int:
    """Map ``pages`` pages (faulted in for write if ``fault``); return the base address."""
    base = mm.mmap(pages * mm.page_size)
    if fault:
        for i in range(pages):
            mm.fault(base + i * mm.page_size, write=True)
    return base


@pytest.fixture
def register() -> Callable[[HmmMirror, mn.MM], None]:
    """``register(mirror, mm)``: ``hmm_mirror_register`` under the mmap lock held for write."""
    return _register


@pytest.fixture
def mapped() -> Callable[..., int]:
    """``mapped(mm, pages, fault=True)``: map pages (faulted in for write) and return their base."""
    return _mapped


@pytest.fixture
def recording() -> type[RecordingMirror]:
    """The :class:`RecordingMirror` class."""
    return RecordingMirror
