"""Shared fixture of the radeon tests: a fresh machine with the driver loaded under a given config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mmu_notifier import MM, Kernel, synchronize
from mmu_notifier_radeon import RadeonConfig, RadeonDriver
from mmu_notifier_radeon.device import ANONONLY, REGISTER, VALIDATE, Radeon, RadeonBO, RadeonDevice, RadeonFile

USERPTR = ANONONLY | REGISTER
BOUND = USERPTR | VALIDATE


@dataclass
class Machine:
    """A kernel with radeon loaded, its module state, and the processes a test made."""

    kernel: Kernel
    driver: RadeonDriver
    radeon: Radeon
    mms: list[MM] = field(default_factory=list)

    @property
    def rdev(self) -> RadeonDevice:
        """The first device."""
        return self.radeon.devices[0]

    @property
    def page(self) -> int:
        """The page size."""
        return self.kernel.page_size

    def process(self, pages: int = 8) -> tuple[MM, int]:
        """A new process with ``pages`` private pages mapped and touched; returns its mm and the mapping."""
        mm = MM(self.kernel)
        address = mm.mmap(pages * self.page)
        for page in range(pages):
            mm.fault(address + page * self.page, write=True)
        self.mms.append(mm)
        return mm, address

    def userptr(self, file: RadeonFile, addr: int, pages: int, flags: int = BOUND) -> tuple[int, RadeonBO]:
        """A userptr BO of ``pages`` pages at ``addr``: its handle and the BO."""
        handle = file.rdev.gem_userptr(file, addr, pages * self.page, flags)
        return handle, file.handles[handle]

    def finish(self) -> None:
        """Every process exits, the module unloads, the destroy work and every free run."""
        for mm in self.mms:
            if mm.alive:
                mm.exit()
        self.radeon.radeon_exit()
        self.kernel.system_wq.flush()
        synchronize(self.kernel)


@pytest.fixture
def machine() -> Callable[..., Machine]:
    """``machine(**config)``: a fresh kernel with radeon loaded (fences signalled at submission by default)."""

    def make(**config: Any) -> Machine:
        config.setdefault("fence_latency", 0)
        kernel = Kernel(frames=512)
        driver = RadeonDriver(RadeonConfig(**config))
        kernel.drivers.add(driver)
        return Machine(kernel, driver, driver.radeon(kernel))

    return make
