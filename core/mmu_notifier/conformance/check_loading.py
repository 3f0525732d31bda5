"""Loading: the driver loads as the kernel would load it, and its exerciser keeps the contract.

A driver that fails here fails every other check too (under its own name):
the kit never skips a broken driver.
"""

from __future__ import annotations

import pytest

from mmu_notifier import exerciser as contract
from mmu_notifier.conformance.harness import DriverUnderTest, LoadFailure, World
from mmu_notifier.conformance.plugin import NO_DRIVER, KitOptions


def test_driver_loads(mmu_driver_name: str, mmu_options: KitOptions) -> None:
    """Import, hook validation, required hooks, default config, construction and the exerciser hook."""
    if mmu_driver_name == NO_DRIVER:
        pytest.fail("no driver plugin is installed in the entry-point group 'mmu_notifier.drivers'", pytrace=False)
    try:
        DriverUnderTest.load(mmu_driver_name, mmu_options.configs)
    except LoadFailure as error:
        pytest.fail(f"driver {mmu_driver_name!r} cannot be loaded: {error}", pytrace=False)


def test_exerciser_contract(mmu_world: World) -> None:
    """attach / map_range / access / translations / detach / unload behave as :mod:`mmu_notifier.exerciser` says."""
    world = mmu_world
    declared = frozenset(getattr(world.driver, "capabilities", frozenset()))
    if declared != world.caps:
        pytest.fail(f"the driver class declares capabilities {sorted(declared)} but its exerciser "
                    f"{sorted(world.caps)}; they must be the same set", pytrace=False)
    mm = world.new_mm()
    handle = world.attach(mm)
    start, end = world.region(mm, 2, handle=handle)
    frames = world.touch(handle, start, end)
    translations = world.exerciser.translations(mm)
    if not isinstance(translations, dict) or not all(
        isinstance(k, int) and isinstance(v, int) for k, v in translations.items()
    ):
        pytest.fail(f"translations(mm) must return a dict of virtual page number -> frame, got {translations!r}",
                    pytrace=False)
    if contract.DEVICE_TRANSLATIONS in world.caps:
        if not any(f is not None for f in frames.values()):
            pytest.fail("no device access succeeded on mapped pages of a mapped range, though the exerciser "
                        "declares device_translations", pytrace=False)
        if not translations:
            pytest.fail("device accesses succeeded but translations(mm) is empty", pytrace=False)
        wanted = {addr >> mm.page_shift: pfn for addr, pfn in frames.items() if pfn is not None}
        if any(translations.get(vpn) != pfn for vpn, pfn in wanted.items()):
            pytest.fail(f"translations(mm) {translations} does not hold what the accesses returned {wanted}",
                        pytrace=False)
    world.detach(handle)
    world.settle("after attach, map_range, access and detach")
    world.exerciser.unload()
    world.settle("after unload")


def test_capabilities_match_hooks(mmu_driver: DriverUnderTest) -> None:
    """Each declared capability is backed by the hooks it needs."""
    ops = mmu_driver.ops
    assert ops is not None
    caps = mmu_driver.capabilities
    problems = []
    if (contract.RELEASE in caps) != (ops.release is not None):
        has = "implements" if ops.release is not None else "does not implement"
        problems.append(f"the driver {has} the release hook but {'declares' if contract.RELEASE in caps else 'omits'}"
                        f" the capability release")
    if contract.REFUSES_NONBLOCK in caps and ops.invalidate_range_start is None:
        problems.append("refuses_nonblock is declared but there is no invalidate_range_start to refuse with")
    if contract.DETACH_BY_EXIT in caps and contract.RELEASE not in caps:
        problems.append("detach_by_exit is declared, but without a release callback nothing drops the reference")
    if contract.DEVICE_TRANSLATIONS in caps and not (ops.invalidate_range_start or ops.invalidate_range
                                                     or ops.invalidate):
        problems.append("device_translations is declared but none of invalidate_range_start, invalidate_range and "
                        "invalidate (interval notifiers) is implemented, so nothing can keep the translations coherent")
    if (contract.INTERVAL in caps) != (ops.invalidate is not None):
        has = "implements" if ops.invalidate is not None else "does not implement"
        problems.append(f"the driver {has} the interval notifiers' invalidate hook but "
                        f"{'declares' if contract.INTERVAL in caps else 'omits'} the capability interval")
    if problems:
        pytest.fail(f"driver {mmu_driver.name!r}: " + "; ".join(problems), pytrace=False)
