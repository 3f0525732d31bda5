"""Tiny driver plugin distributions, broken in every way a plugin author can break one (issue 16).

:func:`install` writes, into a directory, one importable package and one
``.dist-info`` directory (``METADATA`` and ``entry_points.txt``) per plugin:
put the directory on ``sys.path`` (or ``PYTHONPATH`` for a subprocess) and
``importlib.metadata`` finds their entry points exactly as it finds installed
wheels, with no pip and no venv. Every plugin is a self-contained copy of a
small, correct mirroring driver (``rb_base``: the ``MirrorDriver`` of
``mirror_driver.py``, copied beside them) with one fault:

===============  ==============================================================
``rb_good``      none: the healthy control
``rb_import``    raises ImportError while being imported
``rb_exit``      calls ``sys.exit(3)`` while being imported
``rb_alloc``     ``alloc_notifier`` raises RuntimeError
``rb_start``     ``invalidate_range_start`` raises RuntimeError
``rb_sig``       ``alloc_notifier`` takes an argument the hook does not have
``rb_cfg``       ``config_model`` is not a pydantic model
``rb_default``   a config default that breaks its own field's constraint
``rb_sleep``     ``invalidate_range_start`` blocks until :data:`RELEASE` is set
===============  ==============================================================
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

#: the correct mirroring driver the plugins derive from
MIRROR = Path(__file__).resolve().with_name("mirror_driver.py")

#: the base every plugin derives from: the small, correct mirroring driver of ``mirror_driver.py`` (copied beside it)
BASE = '''
"""The base of the broken test plugins: the correct mirroring driver of mirror_driver.py, named by each plugin."""
from mirror_driver import MirrorDriver as Base
from mirror_driver import MirrorSub as Sub

__all__ = ["Base", "Sub"]
'''

#: each plugin's module body after ``from rb_base import Base`` (its class must be ``Driver``)
PLUGINS: dict[str, str] = {
    "rb_good": '''
        class Driver(Base):
            name = "rb_good"
    ''',
    "rb_import": '''
        raise ImportError("rb_import needs libdevice, which is not installed")
    ''',
    "rb_exit": '''
        import sys
        sys.exit(3)
    ''',
    "rb_alloc": '''
        class Driver(Base):
            name = "rb_alloc"

            @mn.hookimpl
            def alloc_notifier(self, mm):
                raise RuntimeError("rb_alloc: alloc boom")
    ''',
    "rb_start": '''
        class Driver(Base):
            name = "rb_start"

            @mn.hookimpl
            def invalidate_range_start(self, subscription, range):
                raise RuntimeError("rb_start: start boom")
    ''',
    "rb_sig": '''
        class Driver(Base):
            name = "rb_sig"

            @mn.hookimpl
            def alloc_notifier(self, mm, flags):
                return Sub()
    ''',
    "rb_cfg": '''
        class Driver(Base):
            name = "rb_cfg"
            config_model = dict
    ''',
    "rb_default": '''
        from pydantic import Field

        class Config(mn.DriverConfig):
            queues: int = Field(0, gt=0, description="device queues")

        class Driver(Base):
            name = "rb_default"
            config_model = Config
    ''',
    "rb_sleep": '''
        import threading

        RELEASE = threading.Event()

        class Driver(Base):
            name = "rb_sleep"

            @mn.hookimpl
            def invalidate_range_start(self, subscription, range):
                RELEASE.wait(3600)  # "for ever": a test sets RELEASE to let it go
                return 0
    ''',
}

#: every plugin but the hanging one
BROKEN = ("rb_import", "rb_exit", "rb_alloc", "rb_start", "rb_sig", "rb_cfg", "rb_default")
#: the ones ``load_entry_points`` refuses (the others load and misbehave while running)
UNLOADABLE = ("rb_import", "rb_exit", "rb_sig", "rb_cfg", "rb_default")


def install(directory: Path, names: tuple[str, ...] | list[str]) -> Path:
    """Write the plugins ``names`` (and ``rb_base``) into ``directory`` as importable distributions."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rb_base.py").write_text(BASE)
    shutil.copy(MIRROR, directory / MIRROR.name)
    for name in names:
        body = "import mmu_notifier as mn\nfrom rb_base import Base, Sub\n" + textwrap.dedent(PLUGINS[name])
        (directory / f"{name}.py").write_text(body)
        dist = directory / f"{name}-0.1.dist-info"
        dist.mkdir(exist_ok=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[mmu_notifier.drivers]\n{name} = {name}:Driver\n")
    return directory
