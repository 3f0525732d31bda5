"""Packaging: the entry point names the driver, a version is declared, importing it is quiet.

Models what ``modprobe`` relies on: a module's name is what it is loaded
by, it carries a version, and loading it has no side effects beyond
registering itself (here: no logging configured, no thread started, since
the host application owns both).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

#: run in a fresh interpreter: what importing the plugin changed
_PROBE = textwrap.dedent(
    """
    import json, logging, sys, threading
    from importlib.metadata import entry_points

    def loggers():
        seen = {}
        for name, logger in [("", logging.getLogger()), *logging.Logger.manager.loggerDict.items()]:
            if isinstance(logger, logging.Logger):
                handlers = [type(h).__name__ for h in logger.handlers if not isinstance(h, logging.NullHandler)]
                if handlers:
                    seen[name or "root"] = handlers
        return seen

    import mmu_notifier, structlog
    from mmu_notifier.log import LOG
    before_threads = {t.name for t in threading.enumerate()}
    before_level = logging.getLogger().level
    before_loggers = loggers()
    before_structlog = structlog.is_configured()
    (ep,) = [e for e in entry_points(group="mmu_notifier.drivers") if e.name == sys.argv[1]]
    ep.load()
    print(json.dumps({
        "threads": sorted({t.name for t in threading.enumerate()} - before_threads),
        "root_level": [before_level, logging.getLogger().level],
        "loggers": {k: v for k, v in loggers().items() if before_loggers.get(k) != v},
        "structlog": [before_structlog, structlog.is_configured()],
        "mmu_notifier_log_on": LOG.on,
    }))
    """
)


def _load(entry_point: EntryPoint) -> object:
    try:
        return entry_point.load()
    except Exception as error:
        pytest.fail(f"driver {entry_point.name!r}: import of {entry_point.value!r} failed: "
                    f"{type(error).__name__}: {error}", pytrace=False)


def test_entry_point_name_matches(mmu_entry_point: EntryPoint) -> None:
    """The entry-point name (what users pass to --mmu-driver and configs) equals the driver's declared ``name``."""
    factory = _load(mmu_entry_point)
    declared = getattr(factory, "name", None)
    if declared != mmu_entry_point.name:
        pytest.fail(f"entry point {mmu_entry_point.name!r} = {mmu_entry_point.value!r} declares name {declared!r}; "
                    f"the two must be equal", pytrace=False)


def test_version_declared(mmu_entry_point: EntryPoint) -> None:
    """The driver declares its own version (not the base class's "0") and its distribution has a version."""
    factory = _load(mmu_entry_point)
    version = str(getattr(factory, "version", "") or "")
    if version in ("", "0"):
        pytest.fail(f"driver {mmu_entry_point.name!r} declares no version (set the class attribute version)",
                    pytrace=False)
    dist = mmu_entry_point.dist
    if dist is None or not dist.version:
        pytest.fail(f"the distribution providing {mmu_entry_point.name!r} has no version", pytrace=False)


def test_import_is_quiet(mmu_entry_point: EntryPoint) -> None:
    """Importing the plugin in a fresh interpreter configures no logging and starts no thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # what this process can import, the child can
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, mmu_entry_point.name],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    if probe.returncode:
        pytest.fail(f"importing {mmu_entry_point.value!r} in a fresh interpreter failed:\n{probe.stderr}",
                    pytrace=False)
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    problems = []
    if seen["threads"]:
        problems.append(f"started thread(s) {seen['threads']}")
    if seen["root_level"][0] != seen["root_level"][1]:
        problems.append(f"changed the root logger's level from {seen['root_level'][0]} to {seen['root_level'][1]}")
    if seen["loggers"]:
        problems.append(f"added logging handler(s) {seen['loggers']}")
    if seen["structlog"][0] != seen["structlog"][1]:
        problems.append("configured structlog")
    if seen["mmu_notifier_log_on"]:
        problems.append("switched on mmu_notifier's event log (that is the application's choice)")
    if problems:
        pytest.fail(f"importing {mmu_entry_point.value!r} " + "; ".join(problems), pytrace=False)
