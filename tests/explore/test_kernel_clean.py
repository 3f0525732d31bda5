"""mmu_notifier.scenarios.kernel_clean: the end-of-run check every scenario (built-in, plugin, third party) shares."""

from __future__ import annotations

import pytest

from mmu_notifier import Kernel
from mmu_notifier.errors import UseAfterFreeError
from mmu_notifier.explore import Violation
from mmu_notifier.scenarios import kernel_clean


def test_a_clean_kernel_passes() -> None:
    kernel_clean(Kernel(frames=1))


def test_the_first_warn_is_a_violation_naming_it() -> None:
    kernel = Kernel(frames=1)
    kernel.warn("put with no users")
    kernel.warn("second")
    with pytest.raises(Violation, match=r"^kernel WARN: put with no users$"):
        kernel_clean(kernel)


def test_a_deferred_callbacks_exception_keeps_its_kind() -> None:
    kernel = Kernel(frames=1)
    kernel.warn("a WARN as well")
    bug = UseAfterFreeError("free_notifier touched a freed object")
    kernel.bugs.append(bug)
    with pytest.raises(UseAfterFreeError) as raised:
        kernel_clean(kernel)
    assert raised.value is bug


def test_allow_passes_the_warns_a_scenario_expects_only() -> None:
    kernel = Kernel(frames=1)
    kernel.warn("interval insert after exit_mmap refused")
    kernel_clean(kernel, allow=lambda warning: "after exit_mmap" in warning)
    kernel.warn("put with no users")
    with pytest.raises(Violation, match="put with no users"):
        kernel_clean(kernel, allow=lambda warning: "after exit_mmap" in warning)
