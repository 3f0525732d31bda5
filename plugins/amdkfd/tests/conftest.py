"""Shared fixture of the amdkfd tests: a fresh machine with the driver loaded under a given config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mmu_notifier import MM, Kernel
from mmu_notifier_amdkfd import Kfd, KfdConfig, KfdDriver


@dataclass
class Machine:
    """A kernel with amdkfd loaded, its module state, and the mms a test made."""

    kernel: Kernel
    driver: KfdDriver
    kfd: Kfd
    mms: list[MM] = field(default_factory=list)

    def mm(self, pages: int = 4) -> tuple[MM, int]:
        """A new address space with ``pages`` pages mapped and touched; returns it and the mapping's address."""
        mm = MM(self.kernel)
        address = mm.mmap(pages * mm.page_size)
        for page in range(pages):
            mm.fault(address + page * mm.page_size, write=True)
        self.mms.append(mm)
        return mm, address

    def teardown(self) -> None:
        """Every mm exits, then the module unloads: what must leave nothing behind."""
        for mm in self.mms:
            if mm.alive:
                mm.exit()
        self.kfd.module_exit()

    def assert_clean(self) -> None:
        """No WARN, no bug in a deferred callback or a work, nothing kfd allocated is left."""
        assert self.kernel.warnings == []
        assert self.kernel.bugs == []
        assert self.kfd.leaks() == {}


@pytest.fixture
def machine() -> Callable[..., Machine]:
    """``machine(**config)``: a new machine with amdkfd loaded under ``config``."""

    def make(**config: Any) -> Machine:
        kernel = Kernel(frames=4096)
        driver = KfdDriver(KfdConfig.model_validate(config))
        kernel.drivers.add(driver)
        return Machine(kernel, driver, driver.kfd(kernel))

    return make
