"""The plugin guide keeps its promises: anchors the kit links to exist, every snippet imports what it uses,
the loader warns about hook methods without ``@hookimpl``, and the capability names are top-level."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest
from freshenv import REPO, distribution_dirs

import mmu_notifier as mn
from mmu_notifier import exerciser, plugins
from mmu_notifier.conformance.plugin import GUIDE, GUIDE_LINKS, guide_links

GUIDE_TEXT = (REPO / GUIDE).read_text()
ANCHORS = set(re.findall(r'<a id="([^"]+)"></a>', GUIDE_TEXT))
SNIPPETS = re.findall(r"```python\n(.*?)```", GUIDE_TEXT, flags=re.DOTALL)


def test_every_guide_section_the_kit_links_to_exists() -> None:
    linked = {anchor for anchors in GUIDE_LINKS.values() for anchor in anchors}
    assert linked <= ANCHORS, sorted(linked - ANCHORS)
    assert guide_links("test_coherence")[0] == "docs/plugin-guide.md#hook-invalidate_range_start"


def test_every_kit_check_links_somewhere() -> None:
    kit = REPO / "core" / "mmu_notifier" / "conformance"
    tests = {m for path in kit.glob("check_*.py") for m in re.findall(r"^def (test_\w+)", path.read_text(), re.M)}
    assert tests == set(GUIDE_LINKS), sorted(tests ^ set(GUIDE_LINKS))


def test_every_hook_has_an_anchor() -> None:
    assert {f"hook-{name}" for name in plugins.HOOK_NAMES} <= ANCHORS


def test_every_python_snippet_imports_what_it_uses(tmp_path: Path) -> None:
    assert len(SNIPPETS) >= 6
    files = []
    for number, snippet in enumerate(SNIPPETS):
        path = tmp_path / f"snippet_{number}.py"
        path.write_text(snippet)
        compile(snippet, str(path), "exec")
        files.append(str(path))
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F821,F822,F401",
                          *files], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


class Unmarked(mn.Driver):
    """A driver whose ``release`` lacks the marker: the core would never call it."""

    name = "unmarked"
    version = "1.0"

    @mn.hookimpl
    def alloc_notifier(self, mm: mn.MM) -> mn.MMUNotifier:
        return mn.MMUNotifier()

    @mn.hookimpl
    def free_notifier(self, subscription: mn.MMUNotifier) -> None:
        pass

    def release(self, subscription: mn.MMUNotifier, mm: mn.MM) -> None:
        raise AssertionError("never called")


def test_a_hook_method_without_hookimpl_is_warned_about_by_name() -> None:
    kernel = mn.Kernel(frames=16)
    with pytest.warns(mn.PluginWarning, match=r"driver 'unmarked': the method release has a hook's name but no "
                                              r"@hookimpl marker.*docs/plugin-guide.md#hook-release"):
        ops = kernel.drivers.add(Unmarked())
    assert ops.release is None  # loaded, but the callback is absent, as the warning says
    assert plugins.unmarked_hooks(Unmarked()) == ["release"]


def test_the_repository_drivers_load_without_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every driver of plugins/ and examples/, imported from its source tree (installed or not)."""
    checked = []
    for source in distribution_dirs()[1:]:
        project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
        for name, target in project["entry-points"]["mmu_notifier.drivers"].items():
            monkeypatch.syspath_prepend(str(source))
            module, _, attr = target.partition(":")
            driver = getattr(importlib.import_module(module), attr)()
            with warnings.catch_warnings():
                warnings.simplefilter("error", mn.PluginWarning)
                mn.Kernel(frames=64).drivers.add(driver, name)
            checked.append(name)
    assert len(checked) >= len(distribution_dirs()) - 1, checked


def test_the_capability_names_are_reachable_from_the_top_level_package() -> None:
    assert {"Capability", "Exerciser", "Handle", "PluginWarning"} <= set(mn.__all__)
    assert mn.Capability.ALL == exerciser.CAPABILITIES
    assert {mn.Capability.RELEASE, mn.Capability.REFUSES_NONBLOCK, mn.Capability.TRACKS_RANGES,
            mn.Capability.DEVICE_TRANSLATIONS, mn.Capability.DETACH_BY_EXIT, mn.Capability.INTERVAL,
            mn.Capability.INTERVAL_ONLY} == exerciser.CAPABILITIES
    assert mn.Capability.RELEASE == "release"
