"""Loading, configuration, the exerciser, and import hygiene of the ``hmm`` plugin."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

import mmu_notifier as mn
from mmu_notifier.exerciser import Exerciser
from mmu_notifier_hmm import Hmm, HmmConfig, HmmDriver


def test_entry_point_loads_with_its_config():
    report = mn.Kernel(frames=16).drivers.load_entry_points({"hmm": {"scheme": "legacy"}}, only=["hmm"])
    assert not report.failed
    driver = report.loaded["hmm"].driver
    assert isinstance(driver, HmmDriver) and driver.config.scheme == "5.3"
    assert report.loaded["hmm"].version == "5.4"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"device_pages": 0}, "device_pages"),
        ({"fault_timeout_ms": -1}, "fault_timeout_ms"),
        ({"scheme": "5.2"}, "scheme"),
        ({"refuse_nonblock": "some"}, "refuse_nonblock"),
        ({"collision_check": "none"}, "collision_check"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_configs_are_rejected_naming_the_field(raw, field):
    report = mn.Kernel(frames=16).drivers.load_entry_points({"hmm": raw}, only=["hmm"])
    error = report.failed["hmm"]
    assert isinstance(error, mn.ConfigError) and field in str(error)


def test_config_defaults_and_immutability():
    config = HmmConfig()
    assert (config.scheme, config.legacy_srcu_fix, config.refuse_nonblock, config.collision_check) == (
        "5.4", True, "all", "sequence"
    )
    assert config.fault_timeout_ms == 1000 and config.device_pages == 512
    with pytest.raises(ValidationError):
        config.scheme = "legacy"  # type: ignore[misc]


def test_exerciser_drives_a_device_through_get_and_put(world, mapped):
    kernel, driver, mm = world
    ops = kernel.drivers.ops_of(driver)
    exerciser = ops.exerciser(kernel)
    assert isinstance(exerciser, Exerciser) and exerciser.driver == "hmm"
    assert exerciser.capabilities == HmmDriver.capabilities
    base = mapped(mm, 2)
    first, second = exerciser.attach(mm), exerciser.attach(mm)
    assert isinstance(first.subscription, Hmm) and first.subscription is second.subscription
    assert first.subscription.users == 2
    exerciser.map_range(first, base, base + 2 * mm.page_size)
    assert first.ranges == [(base, base + 2 * mm.page_size)]
    frame = exerciser.access(first, base, write=True)
    assert frame == mm.page_table.lookup(base >> mm.page_shift).pfn
    assert exerciser.access(second, base) == frame
    assert exerciser.translations(mm) == {base >> mm.page_shift: frame}
    hmm = first.subscription
    exerciser.detach(first)
    assert hmm.users == 1 and exerciser.translations(mm) == {base >> mm.page_shift: frame}
    exerciser.unload()
    assert exerciser.translations(mm) == {}
    with pytest.raises(mn.UseAfterFreeError):
        _ = hmm.users
    assert mm.mm_count.value == 1 and not kernel.warnings and not kernel.bugs


def test_import_starts_no_thread_and_configures_no_logging():
    code = (
        "import logging, threading\n"
        "before = threading.active_count(); handlers = list(logging.getLogger().handlers)\n"
        "import mmu_notifier_hmm, mmu_notifier_hmm.scenarios, mmu_notifier_hmm.exerciser\n"
        "from mmu_notifier.log import LOG\n"
        "assert threading.active_count() == before, 'a thread was started'\n"
        "assert logging.getLogger().handlers == handlers and not LOG.on, 'logging was configured'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
