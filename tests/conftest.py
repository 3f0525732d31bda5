"""Shared fixtures for the core's tests: a fresh kernel, a recording driver, a live mm."""

from __future__ import annotations

import pytest
from recording import RecordingDriver

import mmu_notifier as mn


@pytest.fixture
def kernel() -> mn.Kernel:
    """A fresh kernel per test."""
    return mn.Kernel(frames=4096)


@pytest.fixture
def driver(kernel: mn.Kernel) -> RecordingDriver:
    """A recording driver loaded into ``kernel``."""
    recording = RecordingDriver()
    kernel.drivers.add(recording)
    return recording


@pytest.fixture
def mm(kernel: mn.Kernel) -> mn.MM:
    """A live address space on ``kernel``."""
    return mn.MM(kernel)
