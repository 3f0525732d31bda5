"""Tiny driver plugin distributions, broken in every way a plugin author can break one (issue 16).

:func:`install` writes, into a directory, one importable package and one
``.dist-info`` directory (``METADATA`` and ``entry_points.txt``) per plugin:
put the directory on ``sys.path`` (or ``PYTHONPATH`` for a subprocess) and
``importlib.metadata`` finds their entry points exactly as it finds installed
wheels, with no pip and no venv. Every plugin is a self-contained copy of a
small, correct mirroring driver (``rb_base``) with one fault:

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

import textwrap
from pathlib import Path

BASE = '''
"""A small, correct mirroring driver with an exerciser: the base of the broken test plugins."""
import mmu_notifier as mn
from mmu_notifier import exerciser, sync


class Sub(mn.MMUNotifier):
    def __init__(self):
        super().__init__()
        self.lock = sync.SpinLock("rb.lock")
        self.translations = {}
        self.active = 0


class Base(mn.Driver):
    version = "0.1"
    capabilities = frozenset({exerciser.DEVICE_TRANSLATIONS})

    @mn.hookimpl
    def alloc_notifier(self, mm):
        return Sub()

    @mn.hookimpl
    def free_notifier(self, subscription):
        subscription.translations.clear()

    @mn.hookimpl
    def invalidate_range_start(self, subscription, range):
        with subscription.lock:
            subscription.active += 1
            first, last = range.start >> range.mm.page_shift, range.end >> range.mm.page_shift
            for vpn in [v for v in subscription.translations if first <= v < last]:
                del subscription.translations[vpn]
        return 0

    @mn.hookimpl
    def invalidate_range_end(self, subscription, range):
        with subscription.lock:
            subscription.active -= 1

    @mn.hookimpl
    def release(self, subscription, mm):
        with subscription.lock:
            subscription.translations.clear()

    @mn.hookimpl
    def exerciser(self, kernel):
        return Ex(self, kernel)


class Ex:
    def __init__(self, driver, kernel):
        self.plugin = driver
        self.driver = driver.name
        self.capabilities = type(driver).capabilities
        self.kernel = kernel
        self.subs = {}

    def attach(self, mm):
        sub = mn.get(self.plugin, mm)
        self.subs[mm.id] = sub
        return exerciser.Handle(mm, sub)

    def map_range(self, handle, start, end):
        handle.ranges.append((start, end))

    def access(self, handle, address, write=False):
        mm, sub = handle.mm, handle.subscription
        if not mm.mmget_not_zero():
            return None
        try:
            mm.mmap_lock.down_read()
            try:
                pfn = mm.handle_mm_fault(address, write)
                with sub.lock:
                    if sub.active:
                        return None
                    sub.translations[address >> mm.page_shift] = pfn
                    return pfn
            finally:
                mm.mmap_lock.up_read()
        finally:
            mm.mmput()

    def translations(self, mm):
        sub = self.subs.get(mm.id)
        if sub is None or mn.kmem.is_freed(sub):
            return {}
        return dict(sub.translations)

    def detach(self, handle):
        mn.put(handle.subscription)

    def unload(self):
        mn.synchronize(self.kernel)
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
    for name in names:
        body = "import mmu_notifier as mn\nfrom rb_base import Base, Sub\n" + textwrap.dedent(PLUGINS[name])
        (directory / f"{name}.py").write_text(body)
        dist = directory / f"{name}-0.1.dist-info"
        dist.mkdir(exist_ok=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[mmu_notifier.drivers]\n{name} = {name}:Driver\n")
    return directory
