"""Packaging and contracts: the entry point, a quiet import, the exerciser, the explorer scenarios."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import mmu_notifier as mn
from mmu_notifier import scenarios as registry
from mmu_notifier.exerciser import DEVICE_TRANSLATIONS, Exerciser
from mmu_notifier.plugins import available_drivers
from mmu_notifier_gru import GruDriver

PAGE = 4096


def test_the_entry_point_names_the_driver_of_its_own_distribution() -> None:
    (entry,) = [ep for ep in available_drivers() if ep.name == "gru"]
    assert entry.load() is GruDriver and GruDriver.name == "gru"
    assert entry.dist is not None and entry.dist.name == "mmu-notifier-gru"
    assert importlib.metadata.version("mmu-notifier-gru") == "0.1.0"


def test_importing_the_plugin_configures_no_logging_and_starts_no_thread() -> None:
    code = (
        "import logging, threading; before = threading.active_count(); handlers = list(logging.root.handlers)\n"
        "import mmu_notifier_gru, mmu_notifier_gru.scenarios, mmu_notifier_gru.legacy\n"
        "from mmu_notifier.log import LOG\n"
        "assert threading.active_count() == before, 'a thread was started'\n"
        "assert logging.root.handlers == handlers and not LOG.on, 'logging was configured'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_exerciser_follows_the_contract_end_to_end() -> None:
    kernel = mn.Kernel(frames=256)
    driver = GruDriver()
    ops = kernel.drivers.add(driver)
    exerciser = ops.exerciser(kernel)
    assert isinstance(exerciser, Exerciser) and exerciser.capabilities == frozenset({DEVICE_TRANSLATIONS})
    mm = mn.MM(kernel)
    addr = mm.mmap(2 * PAGE)
    first, second = exerciser.attach(mm), exerciser.attach(mm)
    assert first.subscription is second.subscription and first.subscription.users == 2
    exerciser.map_range(first, addr, addr + 2 * PAGE)
    pfn = exerciser.access(first, addr + PAGE, write=True)
    assert pfn == mm.page_table.entries[(addr + PAGE) // PAGE].pfn
    assert exerciser.translations(mm) == {(addr + PAGE) // PAGE: pfn}
    exerciser.detach(first)
    exerciser.detach(second)
    assert exerciser.translations(mm) == {}
    assert mm.mmu_notifier_mm is not None and not mm.mmu_notifier_mm.subscriptions
    exerciser.unload()
    assert driver.stats["gms_free"] == 1 and kernel.srcu.pending_callbacks() == 0


def test_the_explorer_finds_every_gru_scenario_through_the_plugin_hook() -> None:
    known = registry.scenarios(plugins=True)
    expected = {
        "gru-legacy-drop-vs-register": "use-after-free",
        "gru-legacy-release-vs-drop": "use-after-free",
        "gru-drop-vs-register": None,
        "gru-release-vs-drop": None,
        "gru-dropin-vs-invalidate": None,
        "gru-intr-dropin-vs-invalidate": None,
    }
    assert {name: known[name].expect for name in expected} == expected
