"""Fixtures for the rdma_odp tests: a kernel with the driver loaded, a process, devices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import mmu_notifier as mn
from mmu_notifier_rdma_odp import RdmaOdpConfig, RdmaOdpDriver
from mmu_notifier_rdma_odp.device import IbUcontext, Mlx5Device

PAGE = 4096


@dataclass
class World:
    """One kernel with the driver, one process (``mm``) and two devices."""

    kernel: mn.Kernel
    driver: RdmaOdpDriver
    mm: mn.MM
    devices: list[Mlx5Device]

    def open(self, device: int = 0, mm: mn.MM | None = None) -> IbUcontext:
        """The process opens device ``device``."""
        return self.driver.open(self.devices[device], mm or self.mm)

    def translations(self, mm: mn.MM | None = None) -> dict[int, int]:
        """Every MTT of ``mm`` on both devices."""
        merged: dict[int, int] = {}
        for device in self.devices:
            merged.update(device.translations(mm or self.mm))
        return merged

    def coherent(self, mm: mn.MM | None = None) -> None:
        """Every MTT names the frame the CPU page table maps there."""
        mm = mm or self.mm
        for vpn, pfn in self.translations(mm).items():
            pte = mm.page_table.lookup(vpn)
            assert pte is not None and pte.pfn == pfn, f"stale MTT: page {vpn:#x} -> {pfn}, CPU {pte}"


def build(**config: Any) -> World:
    """A world whose driver has ``config``."""
    kernel = mn.Kernel(frames=1024)
    driver = RdmaOdpDriver(RdmaOdpConfig(**config))
    kernel.drivers.add(driver)
    return World(kernel, driver, mn.MM(kernel), [Mlx5Device(driver, "mlx5_0"), Mlx5Device(driver, "mlx5_1")])


@pytest.fixture
def make() -> Callable[..., World]:
    """``make(**config)`` -> a fresh :class:`World`."""
    return build
