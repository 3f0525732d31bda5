"""Fixtures for the gru plugin's tests: a kernel with the driver loaded, and a helper to build one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import mmu_notifier as mn
from mmu_notifier_gru import GruConfig, GruDriver, GruDriverBase

Loaded = tuple[mn.Kernel, GruDriverBase]


def load(kernel: mn.Kernel | None = None, **config: Any) -> Loaded:
    """A kernel (fresh unless given) with a GRU driver of ``config`` loaded into it."""
    kernel = kernel or mn.Kernel(frames=4096)
    driver: GruDriverBase = GruDriver(GruConfig(**config))
    kernel.drivers.add(driver)
    return kernel, driver


@pytest.fixture
def make() -> Callable[..., Loaded]:
    """``make(**config)`` -> (kernel, driver)."""
    return load
