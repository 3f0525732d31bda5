"""The conformance kit's pytest plugin (registered under the ``pytest11`` entry point).

Inert unless asked for: in any other test session it only adds its
command-line options. It acts when pytest collects the kit itself
(``pytest --pyargs mmu_notifier.conformance``, or ``mmu-notifier conformance``):

* it collects the kit's ``check_*.py`` modules (whatever ``python_files`` says);
* it parametrizes every kit test over the drivers of the ``mmu_notifier.drivers``
  entry-point group, or over the ones named with ``--mmu-driver NAME``
  (repeatable), so every test id names its driver (``test_coherence[gntdev]``);
* a driver that is installed but cannot be loaded (import error, bad hooks,
  invalid default config, no or broken exerciser) fails ``test_driver_loads``
  and errors every other test under its own name: it is never skipped. A
  named driver that is not installed fails the same way, and so does a kit
  run with no driver installed at all.

Tests skip only where a driver's declared capabilities rule a check out, and
the skip says which capability and why.

With ``--mmu-watchdog SECONDS`` (``mmu-notifier conformance`` passes it), a
kit test that does not finish in time is a *hang*: the plugin prints one line
naming the test (so the driver) and the driver callback every stuck thread is
in, then ends the process with exit code 1, since a thread stuck in a driver
cannot be unwound.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import sys
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from mmu_notifier.conformance.harness import DriverUnderTest, LoadFailure, World
from mmu_notifier.plugins import available_drivers

KIT_DIR = Path(__file__).parent
#: the parameter standing for "no driver installed": its tests fail, saying so
NO_DRIVER = "no-driver-installed"

_cache_key = pytest.StashKey[dict[str, Any]]()


@dataclass(frozen=True)
class KitOptions:
    """The kit's knobs (``--mmu-examples``, ``--mmu-steps``, ``--mmu-budget``, ``--mmu-seed``)."""

    examples: int = 20
    steps: int = 25
    budget: int = 200
    seed: int = 0
    configs: dict[str, dict[str, Any]] | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    """The kit's options; adding them is all the plugin does in a session that does not run the kit."""
    group = parser.getgroup("mmu-notifier", "mmu_notifier conformance kit")
    group.addoption("--mmu-driver", action="append", default=[], metavar="NAME",
                    help="check only driver NAME (repeatable); default: every installed driver")
    group.addoption("--mmu-examples", type=int, default=KitOptions.examples, metavar="N",
                    help=f"examples of the state-machine check (default {KitOptions.examples})")
    group.addoption("--mmu-steps", type=int, default=KitOptions.steps, metavar="N",
                    help=f"steps per state-machine example (default {KitOptions.steps})")
    group.addoption("--mmu-budget", type=int, default=KitOptions.budget, metavar="N",
                    help=f"PCT schedules per concurrency check (default {KitOptions.budget})")
    group.addoption("--mmu-seed", type=int, default=KitOptions.seed, metavar="N",
                    help="seed of the PCT explorations")
    group.addoption("--mmu-watchdog", type=float, default=None, metavar="SECONDS",
                    help="a kit test running longer is reported as a hang and ends the session (exit code 1)")
    group.addoption("--mmu-config", default=None, metavar="FILE",
                    help="TOML file with [drivers.NAME] tables (MMU_NOTIFIER_<DRIVER>__<FIELD> variables apply too)")


def _stuck_in() -> list[str]:
    """Where every thread is stuck: the innermost driver callback (or exerciser call) on its stack."""
    from mmu_notifier.hookspecs import CALLBACKS

    names = set(CALLBACKS) | {"attach", "detach", "map_range", "access", "unload"}
    found = []
    for frame in sys._current_frames().values():
        innermost = None
        walk: Any = frame
        while walk is not None:
            code = walk.f_code
            if code.co_name in names and "mmu_notifier/" not in code.co_filename and innermost is None:
                innermost = f"{code.co_name} ({code.co_filename}:{walk.f_lineno})"
            walk = walk.f_back
        if innermost is not None:
            found.append(innermost)
    return found


def _hang(config: pytest.Config, nodeid: str, seconds: float) -> None:
    where = "; ".join(_stuck_in()) or "no driver callback on any stack"
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # write to the terminal, not into the stuck test's captured output
        with contextlib.suppress(Exception):
            capture.suspend_global_capture(in_=True)
    sys.stdout.flush()
    sys.stderr.write(f"\nmmu-notifier conformance: hang: {nodeid} did not finish within {seconds:g} s; "
                     f"stuck in {where}\n")
    sys.stderr.flush()
    os._exit(1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """The watchdog: a kit test running past ``--mmu-watchdog`` seconds ends the session as a hang."""
    seconds = item.config.getoption("mmu_watchdog")
    if not seconds or not _is_kit_module(Path(str(item.path))):
        return (yield)
    timer = threading.Timer(seconds, _hang, args=(item.config, item.nodeid, seconds))
    timer.daemon = True
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()


def _is_kit_module(path: Path) -> bool:
    return path.parent == KIT_DIR and path.name.startswith("check_") and path.suffix == ".py"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect the kit's ``check_*.py`` modules (and nothing else)."""
    if not _is_kit_module(file_path):
        return None
    patterns = parent.config.getini("python_files")
    if any(fnmatch.fnmatch(file_path.name, pattern) for pattern in patterns):
        return None  # python_files already collects it
    module: pytest.Module = pytest.Module.from_parent(parent, path=file_path)
    return module


def selected_drivers(config: pytest.Config) -> list[str]:
    """The drivers the kit runs against: ``--mmu-driver`` names, else every installed one."""
    named = list(dict.fromkeys(config.getoption("mmu_driver") or []))
    if named:
        return named
    return [ep.name for ep in available_drivers()] or [NO_DRIVER]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that needs a driver over the selected drivers, ids = driver names."""
    if "mmu_driver_name" in metafunc.fixturenames:
        names = selected_drivers(metafunc.config)
        metafunc.parametrize("mmu_driver_name", names, ids=names)


def _requested(config: pytest.Config) -> bool:
    """The session runs the kit: ``--mmu-driver`` given, or the kit's package or files among the arguments."""
    if config.getoption("mmu_driver"):
        return True
    for arg in config.args:
        text = str(arg).split("::")[0]
        if text == "mmu_notifier.conformance" or text.startswith("mmu_notifier.conformance.check_"):
            return True
        if Path(text).resolve() == KIT_DIR or Path(text).resolve().parent == KIT_DIR:
            return True
    return False


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """When the kit runs, say which drivers it checks."""
    if not _requested(config):
        return None
    shown = []
    for ep in available_drivers():
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
        shown.append(f"{ep.name} ({dist})")
    return [
        f"mmu-notifier conformance kit: installed drivers: {', '.join(shown) or 'none'}; "
        f"checking: {', '.join(selected_drivers(config))}"
    ]


def _configs(config: pytest.Config) -> dict[str, dict[str, Any]]:
    from mmu_notifier.config import driver_configs

    path = config.getoption("mmu_config")
    return driver_configs(Path(path) if path else None)


def _cache(config: pytest.Config) -> dict[str, Any]:
    try:
        return config.stash[_cache_key]
    except KeyError:
        cache: dict[str, Any] = {}
        config.stash[_cache_key] = cache
        return cache


def _no_driver() -> None:
    pytest.fail("no driver plugin is installed in the entry-point group 'mmu_notifier.drivers': "
                "install one (pip install <plugin>) or name one with --mmu-driver NAME", pytrace=False)


@pytest.fixture
def mmu_options(request: pytest.FixtureRequest) -> KitOptions:
    """The kit's knobs for this run."""
    config = request.config
    return KitOptions(
        examples=config.getoption("mmu_examples"),
        steps=config.getoption("mmu_steps"),
        budget=config.getoption("mmu_budget"),
        seed=config.getoption("mmu_seed"),
        configs=_configs(config),
    )


def _load_cached(config: pytest.Config, name: str, configs: dict[str, dict[str, Any]] | None) -> Any:
    """The driver loaded once per session, or the :class:`LoadFailure` that loading it raised."""
    cache = _cache(config)
    if name not in cache:
        try:
            cache[name] = DriverUnderTest.load(name, configs)
        except LoadFailure as error:
            cache[name] = error
        except Exception as error:  # a crash of the plugin's own code while loading
            cache[name] = LoadFailure(f"driver {name!r}: loading raised {type(error).__name__}: {error}")
    return cache[name]


@pytest.fixture
def mmu_entry_point(mmu_driver_name: str) -> EntryPoint:
    """The entry point of the driver under test; fails if it is not installed."""
    if mmu_driver_name == NO_DRIVER:
        _no_driver()
    found = {ep.name: ep for ep in available_drivers()}
    if mmu_driver_name not in found:
        pytest.fail(f"driver {mmu_driver_name!r} is not installed in the entry-point group 'mmu_notifier.drivers' "
                    f"(installed: {', '.join(sorted(found)) or 'none'})", pytrace=False)
    return found[mmu_driver_name]


@pytest.fixture
def mmu_driver(mmu_driver_name: str, mmu_options: KitOptions, request: pytest.FixtureRequest) -> DriverUnderTest:
    """The driver under test, loaded once per session; a driver that cannot load fails here, by name."""
    if mmu_driver_name == NO_DRIVER:
        _no_driver()
    loaded = _load_cached(request.config, mmu_driver_name, mmu_options.configs)
    if isinstance(loaded, LoadFailure):
        pytest.fail(f"driver {mmu_driver_name!r} cannot be loaded: {loaded}", pytrace=False)
    assert isinstance(loaded, DriverUnderTest)
    return loaded


@pytest.fixture(autouse=True)
def _mmu_known_kernel_failure(request: pytest.FixtureRequest) -> None:
    """A check the driver declares as known kernel behaviour is a strict expected failure, with the kernel's reason.

    It must fail (an unexpected pass fails the run: the declaration is stale);
    every other check must pass as usual.
    """
    if "mmu_driver_name" not in request.fixturenames:
        return
    driver_name = request.getfixturevalue("mmu_driver_name")
    if driver_name == NO_DRIVER or driver_name not in {ep.name for ep in available_drivers()}:
        return
    loaded = _load_cached(request.config, driver_name, request.getfixturevalue("mmu_options").configs)
    if not isinstance(loaded, DriverUnderTest):
        return
    name = getattr(request.node, "originalname", request.node.name)
    reason = loaded.known_kernel_failures.get(name)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"known kernel behaviour of {loaded.name}: {reason}"))


@pytest.fixture
def mmu_world(mmu_driver: DriverUnderTest) -> Iterator[World]:
    """A fresh machine with only the driver under test; torn down (detach all, unload, synchronize) afterwards."""
    world = mmu_driver.world()
    yield world
    with contextlib.suppress(Exception):  # the test already reported what went wrong
        world.close()


def require(world_or_driver: World | DriverUnderTest, capability: str, why: str) -> None:
    """Skip unless the driver declares ``capability``; the reason names it and what it rules out."""
    caps = world_or_driver.caps if isinstance(world_or_driver, World) else world_or_driver.capabilities
    if capability not in caps:
        pytest.skip(f"driver {world_or_driver.name!r} does not declare the capability {capability!r}: {why}")


def refuse(world_or_driver: World | DriverUnderTest, capability: str, why: str) -> None:
    """Skip if the driver declares ``capability``; the reason names it and what it rules out."""
    caps = world_or_driver.caps if isinstance(world_or_driver, World) else world_or_driver.capabilities
    if capability in caps:
        pytest.skip(f"driver {world_or_driver.name!r} declares the capability {capability!r}: {why}")
